"""Several cameras in one `facecap detector`: processed frames per second per camera, frames dropped, CPU and RSS.

For N = 1, 2, 4, 8 (or --cameras): N different sample videos of 640x480 (the demo's renderer, each camera
its own visits: three people crossing one after another, faces of 50-60 pixels), each looping and paced at
15 fps as a camera delivers them, go through one `facecap detector` process at its default settings (best
mode, detection workers = cameras up to the cores) publishing to a local Mosquitto. After a warm-up, the
process's CPU time and RSS are sampled for --seconds; the per-camera stats lines give the processed fps
(mean over the stats intervals) and the frames the full frame queues dropped (oldest first).

    python bench/cameras.py [--cameras 1,2,4,8] [--seconds 30] [--fps 15]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import psutil

from facecap.devkit.demo.video import render_camera_video
from facecap.devkit.servers import MosquittoServer
from facecap.release import MODEL_FILE

REPO = Path(__file__).resolve().parent.parent
WARM_UP_SECONDS = 6.0
STATS_SECONDS = 5


def shared_dir() -> Path:
    return Path(os.environ.get("FACECAP_SHARED", REPO.parent / "shared"))


def stats_lines(log: Path) -> list[dict[str, str]]:
    lines = [line.split("stats: ", 1)[1] for line in log.read_text().splitlines() if "stats: " in line]
    return [dict(pair.split("=", 1) for pair in line.split()) for line in lines]


def per_camera(lines: list[dict[str, str]]) -> dict[str, list[dict[str, str]]]:
    """Each camera's stats lines; one camera has only the detector's line (no `camera` key)."""
    cameras: dict[str, list[dict[str, str]]] = {}
    for line in lines:
        if "camera" in line or "cameras" not in line:
            cameras.setdefault(line.get("camera", "cam0"), []).append(line)
    return cameras


def run(count: int, videos: list[Path], seconds: float, fps: float, work: Path) -> None:
    broker = MosquittoServer(work / f"broker-{count}").start()
    config = {
        "deviceId": "bench",
        "cameras": [{"cameraId": f"cam{n}", "source": str(video), "loop": True, "maxFps": fps}
                    for n, video in enumerate(videos[:count])],
        "detection": {"modelPath": str(shared_dir() / "models" / MODEL_FILE)},
        "mqtt": {"host": broker.host, "port": broker.port},
        "statsIntervalSeconds": STATS_SECONDS,
        "outbox": {"dir": str(work / f"outbox-{count}")},  # not the current folder (the checkout)
    }
    log_path = work / f"detector-{count}.log"
    argv = [sys.executable, "-m", "facecap.cli", "detector", "--config", json.dumps(config)]
    load_before = os.getloadavg()[0]
    with open(log_path, "wb") as log:
        detector = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    process = psutil.Process(detector.pid)
    try:
        time.sleep(WARM_UP_SECONDS)
        periodic_before = len(stats_lines(log_path))
        cpu_start, started = process.cpu_times(), time.monotonic()
        rss = []
        while time.monotonic() - started < seconds:
            rss.append(process.memory_info().rss / 2**20)
            time.sleep(0.5)
        cpu_end, elapsed = process.cpu_times(), time.monotonic() - started
        measured = stats_lines(log_path)[periodic_before:]
    finally:
        detector.terminate()
        code = detector.wait(30)
        broker.stop()
    final = {camera: lines[-1] for camera, lines in per_camera(stats_lines(log_path)).items()}
    cpu = (cpu_end.user + cpu_end.system - cpu_start.user - cpu_start.system) / elapsed
    cameras = per_camera(measured)
    processed = sum(statistics.mean(float(line["fps"]) for line in lines) for lines in cameras.values())
    # CPU per processed frame holds up better than fps when other work shares the cores: it says how many
    # frames per second the cores could process if the detector had them to itself.
    per_frame = cpu / processed if processed else float("nan")
    print(f"{count} camera(s) at {fps:g} fps: CPU {100 * cpu:.0f} % of one core ({os.cpu_count()} cores), "
          f"{1000 * per_frame:.1f} ms CPU per processed frame (so {(os.cpu_count() or 1) / per_frame:.0f} fps on "
          f"idle cores), RSS peak {max(rss):.0f} MB median {statistics.median(rss):.0f} MB, load average before "
          f"{load_before:.1f}, exit {code}")
    for camera, lines in cameras.items():
        rates = [float(line["fps"]) for line in lines]
        last = final.get(camera, {})
        print(f"  {camera}: processed {statistics.mean(rates):5.1f} fps (min {min(rates):4.1f} over "
              f"{len(rates)} x {STATS_SECONDS} s), dropped {last.get('queue_dropped', '?')} of "
              f"{last.get('frames', '?')} processed, faces sent {last.get('sent', '?')}")


def detection_alone(video: Path) -> float:
    """CPU ms per frame of YuNet alone at the default scale, one thread, on the first camera's frames: the
    reference for the per-frame cost of the whole process under the same load."""
    import cv2

    from facecap.detector.config import DetectionSettings
    from facecap.detector.detection import YuNetDetector

    cv2.setNumThreads(1)
    detector = YuNetDetector(str(shared_dir() / "models" / MODEL_FILE), scaling=DetectionSettings().scaling())
    capture = cv2.VideoCapture(str(video))
    frames: list[Any] = []
    while len(frames) < 100:
        ok, image = capture.read()
        if not ok:
            break
        frames.append(image)
    capture.release()
    for frame in frames[:10]:
        detector.detect(frame)
    started = time.process_time()
    for frame in frames:
        detector.detect(frame)
    return 1000 * (time.process_time() - started) / len(frames)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--cameras", default="1,2,4,8", help="camera counts, comma-separated (default 1,2,4,8)")
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--fps", type=float, default=15)
    args = parser.parse_args()
    counts = [int(c) for c in args.cameras.split(",") if c]
    print(f"bench/cameras.py {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores, "
          f"load average {' '.join(f'{v:.1f}' for v in os.getloadavg())}")
    with tempfile.TemporaryDirectory(prefix="facecap-bench-cameras-") as folder:
        work = Path(folder)
        videos = [work / f"camera{n}.avi" for n in range(max(counts))]
        for index, video in enumerate(videos):
            render_camera_video(video, index)
        print(f"YuNet alone at the default scale, one thread: {detection_alone(videos[0]):.1f} ms CPU per frame")
        for count in counts:
            run(count, videos, args.seconds, args.fps, work)


if __name__ == "__main__":
    main()
