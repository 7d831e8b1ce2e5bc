"""Frame sources with real OpenCV: files that end or loop, the frame-rate cap, and a network stream that
drops and comes back (served over HTTP on loopback)."""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from facecap.detector.camera import Camera, CameraUnavailableError
from facecap.detector.config import CameraSettings

from .scenes import Scene

pytestmark = pytest.mark.integration


def collect(camera: Camera, limit: int, stop: threading.Event | None = None) -> list[Any]:
    stop = stop or threading.Event()
    frames = []
    for frame in camera.frames(stop):
        frames.append(frame)
        if len(frames) >= limit:
            stop.set()
    return frames


def test_a_file_ends_with_file_time_stamps(street: Scene, street_video: Path) -> None:
    camera = Camera(CameraSettings(source=str(street_video), max_fps=0))
    frames = collect(camera, 10_000)
    assert len(frames) == street.frames
    assert [f.index for f in frames[:3]] == [0, 1, 2]
    assert frames[-1].timestamp == pytest.approx((street.frames - 1) / 10)
    assert frames[0].image.shape == (480, 640, 3)


def test_a_looping_file_keeps_time_moving_forward(street: Scene, street_video: Path) -> None:
    camera = Camera(CameraSettings(source=str(street_video), max_fps=0, loop=True))
    frames = collect(camera, street.frames * 2 + 5)
    stamps = [f.timestamp for f in frames]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
    assert camera.stats.opens == 3


def test_the_frame_rate_cap_paces_a_file(street_video: Path) -> None:
    camera = Camera(CameraSettings(source=str(street_video), max_fps=20))
    started = time.monotonic()
    collect(camera, 11)
    # 11 frames at 20 fps cannot come faster than 10 periods (a lower bound: slower is fine).
    assert time.monotonic() - started >= 0.45


@pytest.fixture
def http_video(street_video: Path) -> Iterator[tuple[str, ThreadingHTTPServer]]:
    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(street_video.parent)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/{street_video.name}", server
    server.shutdown()
    server.server_close()


def test_a_stream_that_drops_is_reopened_and_finally_given_up(
    street: Scene, http_video: tuple[str, ThreadingHTTPServer], caplog: pytest.LogCaptureFixture,
) -> None:
    url, server = http_video
    settings = CameraSettings(source=url, max_fps=0, reconnect_min_seconds=0.1, reconnect_max_seconds=0.4,
                              give_up_after_seconds=1.5, timeout_seconds=2)
    camera = Camera(settings)
    stop = threading.Event()
    frames = 0
    caplog.set_level(logging.INFO, logger="facecap.detector.camera")
    with pytest.raises(CameraUnavailableError, match=r"giveUpAfterSeconds=1\.5"):
        for _ in camera.frames(stop):
            frames += 1
            # The stream ends after one pass (a dropped camera); it is reopened and plays again. Then
            # the server goes away for good.
            if frames == street.frames + 20:
                server.shutdown()
                server.server_close()
    assert frames >= street.frames + 20
    assert camera.stats.opens >= 2 and camera.stats.outages >= 2
    messages = [r.getMessage() for r in caplog.records]
    assert any("is back after" in m for m in messages)
    assert any("unavailable: no frame received" in m for m in messages)
    assert all(m.startswith("camera url http://127.0.0.1") for m in messages if "camera" in m)


class OpensButSendsNothing:
    """Stands in for cv2.VideoCapture of a live camera that opens and then delivers no frame, as a USB
    camera on a saturated bus does (no device here can be made to fail that way)."""

    def isOpened(self) -> bool:  # noqa: N802 - OpenCV's name
        return True

    def get(self, prop: int) -> float:
        return 640.0

    def grab(self) -> bool:
        return False

    def retrieve(self) -> tuple[bool, None]:
        return False, None

    def release(self) -> None:
        return None


def test_a_camera_that_opens_but_sends_nothing_is_one_outage_that_backs_off_and_is_given_up(
        caplog: pytest.LogCaptureFixture) -> None:
    settings = CameraSettings(source="rtsp://cam.local/stream", reconnect_min_seconds=0.05,
                              reconnect_max_seconds=0.4, give_up_after_seconds=1.2)
    camera = Camera(settings, opener=lambda _: OpensButSendsNothing())
    caplog.set_level(logging.INFO, logger="facecap.detector.camera")
    stop = threading.Event()
    threading.Timer(10, stop.set).start()  # only if it is never given up: the test then fails below
    with pytest.raises(CameraUnavailableError, match="it opens but delivers no frame"):
        list(camera.frames(stop))
    stop.set()
    assert camera.stats.outages == 1
    # Backing off (0.05, 0.1, 0.2, 0.4, 0.4 ...) fits some 5 opens into 1.2 s, not one every 0.05 s.
    assert 2 <= camera.stats.opens <= 8
    messages = [r.getMessage() for r in caplog.records]
    assert not any("is back" in m for m in messages)
    assert sum(r.levelno >= logging.ERROR for r in caplog.records) == 1


def test_stop_interrupts_the_reconnect_wait() -> None:
    camera = Camera(CameraSettings(source="/dev/video57", reconnect_min_seconds=30, reconnect_max_seconds=30))
    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()
    started = time.monotonic()
    assert list(camera.frames(stop)) == []
    assert time.monotonic() - started < 10
    assert camera.stats.outages == 1
