"""Several cameras in one `facecap detector`: real videos, the real model, a real Mosquitto.

Each camera's faces go to its own topic with its own counts; a camera whose file is missing or unreadable
is reported while the others go on; and a camera full of faces cannot take the detection worker from a
camera with none (round-robin: each gets its share of frames)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from contextlib import suppress
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from facecap.contract import parse_message
from facecap.devkit.demo.video import DEFAULT_VISITS, Visit, _background, _portrait, render_frames, render_video
from facecap.devkit.servers import MosquittoServer
from facecap.polling import wait_until
from tests.support.helpers import Collector, subscriber

from .conftest import DetectorProcess, DetectorRunner, detector_config
from .scenes import Scene
from .scenes import Visit as SceneVisit

pytestmark = pytest.mark.integration


def multi_camera_config(broker: MosquittoServer, model_path: Path, cameras: list[dict[str, Any]],
                        **sections: Any) -> dict[str, Any]:
    config = detector_config(Path("unused"), broker, model_path, **sections)
    del config["cameraId"], config["camera"]
    config["cameras"] = cameras
    return config


def camera_stats(detector: DetectorProcess) -> dict[str, dict[str, str]]:
    """The last stats line of each camera."""
    return {line["camera"]: line for line in detector.stats() if "camera" in line}


def totals(detector: DetectorProcess) -> dict[str, str]:
    lines = [line for line in detector.stats() if "camera" not in line]
    return lines[-1] if lines else {}


def test_each_camera_keeps_its_topic_and_counts_and_a_broken_one_does_not_stop_the_others(  # noqa: PLR0917
    broker: MosquittoServer, street: Scene, street_video: Path, model_path: Path, run_detector: DetectorRunner,
    tmp_path: Path,
) -> None:
    hall_video = tmp_path / "hall.avi"
    hall_frames = render_video(hall_video)
    broken = tmp_path / "broken.avi"
    broken.write_bytes(b"this is not a video\n" * 100)
    cameras: list[dict[str, Any]] = [
        {"cameraId": "door", "source": str(street_video), "maxFps": 0},
        {"cameraId": "hall", "source": str(hall_video), "maxFps": 0},
        {"cameraId": "gone", "source": str(tmp_path / "gone.avi")},
        {"cameraId": "broken", "source": str(broken), "maxFps": 0},
    ]
    collector = Collector()
    listener = subscriber(broker, "faces/#", collector)
    try:
        detector = run_detector(multi_camera_config(broker, model_path, cameras))
        # The worst camera's code: a source that cannot be read is a configuration error.
        assert detector.wait(120) == 2, detector.output()
        collector.wait_for(len(street.visits) + len(DEFAULT_VISITS), timeout=10)
    finally:
        listener.stop()

    output = detector.output()
    assert f"cameras[2].source: video file {tmp_path / 'gone.avi'} does not exist" in output
    assert "camera broken: " in output and "cannot read" in output
    faces = [parse_message(m.topic, m.payload, m.content_type, m.user_properties) for m in collector.messages]
    by_camera: dict[str, int] = {}
    for message, face in zip(collector.messages, faces, strict=True):
        assert message.topic == f"faces/jetson-test/{face.camera_id}"
        by_camera[face.camera_id] = by_camera.get(face.camera_id, 0) + 1
    # Best-shot mode: one face per visit, each camera's own, as with one camera per process.
    assert by_camera == {"door": len(street.visits), "hall": len(DEFAULT_VISITS)}, output
    stats = camera_stats(detector)
    assert (stats["door"]["frames"], stats["door"]["sent"], stats["door"]["queue_dropped"]) == (
        str(street.frames), str(len(street.visits)), "0")
    assert (stats["hall"]["frames"], stats["hall"]["sent"]) == (str(hall_frames), str(len(DEFAULT_VISITS)))
    assert (stats["gone"]["state"], stats["broken"]["state"], stats["door"]["state"]) == ("failed", "failed", "ended")
    assert stats["gone"]["frames"] == stats["broken"]["frames"] == "0"
    whole = totals(detector)
    assert (whole["cameras"], whole["frames"], whole["published"]) == (
        "4", str(street.frames + hall_frames), str(len(street.visits) + len(DEFAULT_VISITS)))


def write_crowd_video(path: Path, frames: int = 40) -> Path:
    """Four faces of about 46 pixels in every frame, each drifting a little."""
    portrait = cv2.resize(_portrait(), (260, 260), interpolation=cv2.INTER_AREA)
    background = _background(640, 480)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 15.0, (640, 480))
    for index in range(frames):
        frame = background.copy()
        shift = index % 20
        for x, y in ((10, 0), (330, 0), (10, 220), (330, 220)):
            frame[y:y + 260, x + shift:x + shift + 260] = portrait
        writer.write(frame)
    writer.release()
    return path


def test_a_camera_full_of_faces_does_not_starve_a_quiet_one(
    broker: MosquittoServer, model_path: Path, run_detector: DetectorRunner, tmp_path: Path,
) -> None:
    crowd = write_crowd_video(tmp_path / "crowd.avi")
    quiet = tmp_path / "quiet.avi"
    writer = cv2.VideoWriter(str(quiet), cv2.VideoWriter.fourcc(*"MJPG"), 15.0, (640, 480))
    for _ in range(40):
        writer.write(np.ascontiguousarray(_background(640, 480)))
    writer.release()
    # Both as fast as they decode, one worker: the worker is the bottleneck, and the crowd's frames cost
    # far more (four faces, each cropped, encoded and sent in `every` mode). The crowd is listed first,
    # so a scheduler that serves the first camera with a frame would never reach the quiet one.
    cameras = [{"cameraId": "crowd", "source": str(crowd), "maxFps": 0, "loop": True},
               {"cameraId": "quiet", "source": str(quiet), "maxFps": 0, "loop": True}]
    config = multi_camera_config(broker, model_path, cameras, detection={"workers": 1},
                                 tracking={"mode": "every", "everyMinIntervalSeconds": 0})
    detector = run_detector(config)
    assert wait_until(lambda: int(totals(detector).get("frames", 0)) >= 120 or detector.process.poll() is not None,
                      timeout=120), detector.output()
    assert detector.terminate() == 0, detector.output()

    stats = camera_stats(detector)
    crowd_frames, quiet_frames = int(stats["crowd"]["frames"]), int(stats["quiet"]["frames"])
    print(f"crowd {stats['crowd']}\nquiet {stats['quiet']}")
    assert int(stats["crowd"]["faces"]) >= 3 * crowd_frames and stats["quiet"]["faces"] == "0"
    # Round-robin: the quiet camera gets (about) every second frame the worker processes.
    assert quiet_frames >= 0.4 * (crowd_frames + quiet_frames), (crowd_frames, quiet_frames)


def test_a_stop_with_stuck_streams_ends_within_the_shutdown_budget(
        broker: MosquittoServer, model_path: Path, run_detector: DetectorRunner, tmp_path: Path) -> None:
    """Greengrass kills a component 5 s after SIGTERM. Capture threads stuck in a stream's read must not
    each take seconds of that: the stop, whatever the cameras do, keeps to shutdownTimeoutSeconds."""
    hall_video = tmp_path / "hall.avi"
    render_video(hall_video)
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)  # accepts connections (the kernel does) and never answers a byte
    port = silent.getsockname()[1]
    cameras: list[dict[str, Any]] = [{"cameraId": "hall", "source": str(hall_video), "loop": True}]
    cameras += [{"cameraId": f"stuck{i}", "source": f"http://127.0.0.1:{port}/cam{i}.mjpg", "timeoutSeconds": 60}
                for i in range(3)]
    detector = run_detector(multi_camera_config(broker, model_path, cameras, shutdownTimeoutSeconds=4))
    try:
        assert wait_until(lambda: int(camera_stats(detector).get("hall", {}).get("frames", "0")) > 0, 60), \
            detector.output()
        started = time.monotonic()
        assert detector.terminate() == 0, detector.output()
        elapsed = time.monotonic() - started
    finally:
        silent.close()
    print(f"\nstop with 3 stuck streams: {elapsed:.1f} s")
    assert elapsed < 4, detector.output()


def test_faces_beyond_max_tracks_are_counted_and_logged(
        broker: MosquittoServer, model_path: Path, run_detector: DetectorRunner, tmp_path: Path) -> None:
    """Four people in view and tracking.maxTracks 2: two are followed and sent; the others were ignored
    without a trace before. Now the stats line counts them and the log says why."""
    crowd = write_crowd_video(tmp_path / "crowd.avi")
    detector = run_detector(detector_config(crowd, broker, model_path, tracking={"maxTracks": 2}))
    assert detector.wait(120) == 0, detector.output()
    whole = detector.stats()[-1]
    print(f"\n{whole}")
    assert int(whole["tracks_total"]) == 2
    assert int(whole["tracks_refused"]) >= 2 * (int(whole["frames"]) - 5)  # two of four, nearly every frame
    assert whole["encode_failures"] == "0"
    assert "more faces than tracking.maxTracks (2) in view" in detector.output()


class StallingMjpegCamera:
    """A network camera over HTTP (multipart MJPEG, as IP cameras serve it) that sends `frames` and then
    stalls: the connection stays open and silent, and later connections are accepted and never answered,
    as when its uplink dies."""

    def __init__(self, frames: list[Any], fps: float = 15.0) -> None:
        self._jpegs = [cv2.imencode(".jpg", frame)[1].tobytes() for frame in frames]
        self._fps = fps
        self._server = socket.create_server(("127.0.0.1", 0))
        self._held: list[socket.socket] = []
        self.sent_all = False
        threading.Thread(target=self._serve, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.getsockname()[1]}/video.mjpg"

    def _serve(self) -> None:
        with suppress(OSError):
            first = True
            while True:
                connection, _ = self._server.accept()
                self._held.append(connection)
                connection.recv(4096)
                if not first:
                    continue
                first = False
                connection.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: multipart/x-mixed-replace;boundary=frame\r\n\r\n")
                for jpeg in self._jpegs:
                    connection.sendall(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n"
                                       % len(jpeg) + jpeg + b"\r\n")
                    time.sleep(1 / self._fps)
                self.sent_all = True

    def close(self) -> None:
        self._server.close()
        for connection in self._held:
            connection.close()


def test_a_face_in_view_when_a_live_camera_stalls_is_sent_without_waiting_for_the_camera(
        broker: MosquittoServer, model_path: Path, run_detector: DetectorRunner) -> None:
    """The track ends lostAfterSeconds after the last frame, camera or no camera: before, its best shot stayed
    in memory until the camera came back or the detector stopped, and a power cut in between lost it."""
    # A person walking in and still in view when the stream stops (2 s of a 3 s visit).
    camera = StallingMjpegCamera(render_frames(visits=(Visit(0.2, 3.0, 300, True, 100),))[:30])
    collector = Collector()
    listener = subscriber(broker, "faces/#", collector)
    config = multi_camera_config(broker, model_path, [{"cameraId": "door", "source": camera.url,
                                                       "timeoutSeconds": 30}], outbox={"enabled": False})
    detector = run_detector(config)
    try:
        assert wait_until(lambda: camera.sent_all, 30), detector.output()
        # Well within the camera's 30 s read timeout: the stream is still "open", just silent.
        assert collector.wait_for(1, timeout=10), detector.output()
        assert "unavailable" not in detector.output()
        message = collector.messages[0]
        face = parse_message(message.topic, message.payload, message.content_type, message.user_properties)
        assert face.camera_id == "door" and face.shot == "best"
    finally:
        detector.terminate()
        listener.stop()
        camera.close()


def test_a_live_camera_slower_than_a_track_lives_still_sends_its_faces(
        broker: MosquittoServer, model_path: Path, run_detector: DetectorRunner, street: Scene) -> None:
    """At maxFps 2 a frame comes every 0.5 s, longer than lostAfterSeconds (0.3 here, as 1 s is with maxFps
    below 1): the silent-camera check must wait a frame period too, or it ends every track between two frames,
    no track reaches minHits, and a person in view is never sent."""
    standing = Scene(street.sprites[:1], [SceneVisit(0, 0, 59, (200, 80), (200, 80))], street.background, 60)
    camera = StallingMjpegCamera([standing.render(index) for index in range(standing.frames)])
    collector = Collector()
    listener = subscriber(broker, "faces/#", collector)
    config = multi_camera_config(broker, model_path, [{"cameraId": "door", "source": camera.url, "maxFps": 2,
                                                       "timeoutSeconds": 30}],
                                 tracking={"lostAfterSeconds": 0.3}, outbox={"enabled": False})
    detector = run_detector(config)
    try:
        assert wait_until(lambda: camera.sent_all, 30), detector.output()
        assert collector.wait_for(1, timeout=10), detector.output()
        time.sleep(1)  # one person: nothing more may follow
        assert len(collector.messages) == 1, [m.user_properties for m in collector.messages]
    finally:
        detector.terminate()
        listener.stop()
        camera.close()


OPEN_WHILE_A_STREAM_HANGS = """
import sys, threading, time
import facecap.detector.camera as camera  # first, as the detector does: before OpenCV is loaded
from facecap.detector.config import CameraSettings
url, video = sys.argv[1], sys.argv[2]
threading.Thread(target=camera.open_capture, args=(CameraSettings(source=url, timeout_seconds=4),),
                 daemon=True).start()
time.sleep(0.5)  # the stream's open is under way, waiting for an answer that never comes
started = time.monotonic()
opened = camera.open_capture(CameraSettings(source=video)).isOpened()
print(opened, round(time.monotonic() - started, 3))
"""


def test_a_camera_that_does_not_answer_does_not_hold_up_the_others_opening(tmp_path: Path) -> None:
    """OpenCV's FFmpeg backend takes one process-wide lock per open unless told FFmpeg is thread-safe, so a
    silent network camera held every other camera's (re)open for its whole timeoutSeconds."""
    video = tmp_path / "hall.avi"
    render_video(video)
    silent = socket.create_server(("127.0.0.1", 0))  # the kernel accepts; nothing ever answers
    try:
        result = subprocess.run([sys.executable, "-c", OPEN_WHILE_A_STREAM_HANGS,
                                 f"http://127.0.0.1:{silent.getsockname()[1]}/cam.mjpg", str(video)],
                                capture_output=True, text=True, timeout=60, check=True,
                                env={k: v for k, v in os.environ.items() if not k.startswith("OPENCV_FFMPEG")})
    finally:
        silent.close()
    opened, seconds = result.stdout.split()
    print(f"\nfile opened in {seconds} s while a stream's open hung")
    assert opened == "True" and float(seconds) < 1.5, result.stdout + result.stderr
