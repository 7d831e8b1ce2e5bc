"""Detector speed and memory: frames per second on one core at 640x480, and the detector's resident memory.

Speed: two sets of 640x480 frames, the 44 dev photos (scaled to cover the frame, centre-cropped) and the
street scene the tests use (people in front of a textured building), go through

- YuNet at each detection width asked for (default 640, the full frame; 416, the detector's default; 320;
  the resize is part of the time),
- the old publishers' method: Haar cascade, scaleFactor 1.3, minNeighbors 5, on the full grey frame,

with cv2.setNumThreads(1), several passes each, after one warm-up pass. Recall on the same frames
(IoU >= 0.5 against the known boxes) is printed beside each, since a fast detector that misses faces is no gain.

HD frames (bench/hd_detection.py): ms per frame at 640x480, 1280x720 and 1920x1080 on one core for the full
frame, the old fixed width 416, the default scale from detection.minFaceSize, 640x640 tiles and
motion-gated regions, with recall and precision beside each.

Memory: `facecap detector` runs as a process on a looping test video in `every` mode against a local
Mosquitto, first connected, then with the broker stopped (faces pile up to the configured bounds);
its RSS is sampled every 0.2 s.

    python bench/detector.py [--passes 5] [--seconds 12] [--widths 640,416,320] [--skip-hd] [--skip-memory]
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import psutil

from facecap.detector.detection import YuNetDetector, default_cascade_path
from facecap.detector.scaling import Scaling
from facecap.devkit.servers import MosquittoServer
from facecap.release import MODEL_FILE

REPO = Path(__file__).resolve().parent.parent
Box = tuple[float, float, float, float]


def shared_dir() -> Path:
    return Path(os.environ.get("FACECAP_SHARED", REPO.parent / "shared"))


def photo_frames(shared: Path) -> list[tuple[Any, list[Box]]]:
    """The dev photos scaled to cover 640x480 and centre-cropped to it (no flat borders: Haar's cost
    depends on how much texture a frame has). Truth: the faces wholly inside the crop."""
    manifest = json.loads((shared / "faces" / "dev" / "manifest.json").read_text())
    result = []
    for entry in manifest["images"]:
        image = cv2.imread(str(shared / "faces" / "dev" / "images" / entry["file"]), cv2.IMREAD_COLOR)
        assert image is not None, entry["file"]
        h, w = image.shape[:2]
        factor = max(640 / w, 480 / h)
        size = (max(640, round(w * factor)), max(480, round(h * factor)))
        scaled = cv2.resize(image, size, interpolation=cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR)
        left, top = (size[0] - 640) // 2, (size[1] - 480) // 2
        frame = np.ascontiguousarray(scaled[top:top + 480, left:left + 640])
        truth = [(x * factor - left, y * factor - top, bw * factor, bh * factor) for x, y, bw, bh in entry["boxes"]]
        inside = [b for b in truth if b[0] >= 0 and b[1] >= 0 and b[0] + b[2] <= 640 and b[1] + b[3] <= 480]
        result.append((frame, inside))
    return result


def street_frames(shared: Path) -> list[tuple[Any, list[Box]]]:
    """Every second frame of the street-scene test video (a textured building, people walking by)."""
    sys.path.insert(0, str(REPO))
    scenes = importlib.import_module("tests.detector.scenes")
    scene = scenes.street_scene(shared)
    return [(scene.render(n), [scene.face_box(v, n) for v in scene.visits if scene.fully_visible(v, n)])
            for n in range(0, scene.frames, 2)]


def iou(a: Box, b: Box) -> float:
    inter_w = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    inter_h = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    if inter_w <= 0 or inter_h <= 0:
        return 0.0
    inter = inter_w * inter_h
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def measure(name: str, detect: Callable[[Any], list[Box]], frames: list[tuple[Any, list[Box]]],
            passes: int) -> float:
    for frame, _ in frames:  # warm-up: first-call allocations and lazy initialisation
        detect(frame)
    found = total = 0
    for frame, truth in frames:
        boxes = detect(frame)
        total += len(truth)
        found += sum(1 for t in truth if any(iou(t, b) >= 0.5 for b in boxes))
    started = time.perf_counter()
    for _ in range(passes):
        for frame, _ in frames:
            detect(frame)
    elapsed = time.perf_counter() - started
    count = passes * len(frames)
    fps = count / elapsed
    print(f"  {name:<34} {1000 * elapsed / count:7.1f} ms/frame {fps:7.1f} fps   recall {found}/{total}")
    return fps


def boxes_of(detector: YuNetDetector) -> Callable[[Any], list[Box]]:
    return lambda frame: [d.bbox for d in detector.detect(frame)]


def speed(shared: Path, passes: int, widths: list[int]) -> None:
    cv2.setNumThreads(1)
    model = str(shared / "models" / MODEL_FILE)
    scaled = {width: YuNetDetector(model, scaling=Scaling(width=width)) for width in widths}
    cascade = cv2.CascadeClassifier(default_cascade_path())

    def old_method(frame: Any) -> list[Box]:
        grey = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
        return [tuple(float(v) for v in box) for box in cascade.detectMultiScale(grey, 1.3, 5)]  # type: ignore[misc]

    print(f"speed: 640x480 frames, one core (cv2.setNumThreads(1)), OpenCV {cv2.__version__}, {passes} passes")
    for title, frames in (("dev photos", photo_frames(shared)), ("street scene", street_frames(shared))):
        print(f" {title}: {len(frames)} frames")
        yunet = {width: measure(f"YuNet, detection width {width}", boxes_of(detector), frames, passes)
                 for width, detector in scaled.items()}
        haar = measure("Haar 1.3/5, full grey frame (old)", old_method, frames, passes)
        print("  ratio to the old method: " + ", ".join(f"YuNet {w} {fps / haar:.1f}x" for w, fps in yunet.items()))


def rss_mb(process: psutil.Process) -> float:
    return float(process.memory_info().rss) / 2**20


def memory(shared: Path, seconds: float) -> None:
    sys.path.insert(0, str(REPO))
    scenes = importlib.import_module("tests.detector.scenes")
    with tempfile.TemporaryDirectory(prefix="facecap-bench-detector-") as folder:
        work = Path(folder)
        video = scenes.street_scene(shared).write(work / "street.avi")
        broker = MosquittoServer(work / "broker").start()
        config = {
            "deviceId": "bench", "cameraId": "street",
            "camera": {"source": str(video), "loop": True, "maxFps": 0},
            "detection": {"modelPath": str(shared / "models" / MODEL_FILE)},
            "tracking": {"mode": "every", "everyMinIntervalSeconds": 0},
            "mqtt": {"host": broker.host, "port": broker.port, "maxReconnectDelaySeconds": 2},
            "statsIntervalSeconds": 2,
        }
        log_path = work / "detector.log"
        argv = [sys.executable, "-m", "facecap.cli", "detector", "--config", json.dumps(config)]
        with open(log_path, "wb") as log:
            detector = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        process = psutil.Process(detector.pid)
        try:
            connected = sample(process, seconds)
            broker.stop()
            away = sample(process, seconds)
            broker.start()
            time.sleep(3)
        finally:
            detector.terminate()
            code = detector.wait(30)
            broker.stop()
        stats = [line.split("stats: ", 1)[1] for line in log_path.read_text().splitlines() if "stats: " in line]
        print(f"memory: `facecap detector`, street video looping as fast as it decodes, every mode, default "
              f"threads ({os.cpu_count()} cores), exit code after SIGTERM {code}")
        print(f"  broker up   {seconds:.0f} s: RSS peak {max(connected):.0f} MB, median {np.median(connected):.0f} MB")
        print(f"  broker down {seconds:.0f} s: RSS peak {max(away):.0f} MB, median {np.median(away):.0f} MB")
        for line in stats[:: max(1, len(stats) // 6)] + stats[-1:]:
            print(f"  stats: {line}")


def sample(process: psutil.Process, seconds: float) -> list[float]:
    values = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        values.append(rss_mb(process))
        time.sleep(0.2)
    return values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--passes", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=12)
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--skip-hd", action="store_true", help="leave out the HD frame sizes")
    parser.add_argument("--only-hd", action="store_true", help="only the HD frame sizes")
    parser.add_argument("--widths", default="640,416,320",
                        help="YuNet detection widths to measure, comma-separated (default 640,416,320)")
    args = parser.parse_args()
    shared = shared_dir()
    if not args.only_hd:
        speed(shared, args.passes, [int(w) for w in args.widths.split(",") if w])
    if not args.skip_hd:
        sys.path.insert(0, str(REPO))
        importlib.import_module("bench.hd_detection").hd_speed(shared, str(shared / "models" / MODEL_FILE))
    if not args.skip_memory and not args.only_hd:
        memory(shared, args.seconds)


if __name__ == "__main__":
    main()
