"""HD frames: what finding faces down to detection.minFaceSize costs at 640x480, 1280x720 and 1920x1080.

Frames: the 44 dev photos, each fitted to 640x480 (as the accuracy tests do) and placed at the centre of a
black frame of the size measured, so faces keep their size in pixels (the same frames as
tests/detector/test_accuracy.py). On one core (cv2.setNumThreads(1)), after a warm-up pass:

- full frame: YuNet on every pixel (`detection.width: 0`);
- fixed 416: the old default, every frame scaled to 416 wide (loses small faces on HD frames);
- auto: the default, the frame scaled by modelFaceSize / minFaceSize (28 / 40), so a 40-px face is seen at
  28 px whatever the frame size;
- tiles: the auto-scaled frame cut into 640x640 tiles (the fixed input a backend other than OpenCV needs),
  64 px overlap, boxes merged by non-maximum suppression;
- motion-gated (street scene, placed in the middle of an HD frame whose rest is a still photo): YuNet at the
  auto scale only on the regions that changed since the previous frame (frame difference at 1/8 size,
  dilated, plus a margin), with a full-frame pass every 15 frames so a person standing still is found again.

Times are CPU time of the detecting thread (time.thread_time), not wall time, so that other processes on
a shared machine do not inflate them; each photo figure is the faster of two passes.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from facecap.detector.detection import Detection, YuNetDetector
from facecap.detector.scaling import Scaling
from facecap.detector.tracking import iou

SIZES = ((640, 480), (1280, 720), (1920, 1080))
TILE, OVERLAP = 640, 64
Box = tuple[float, float, float, float]


class TiledDetector:
    """YuNet on fixed 640x640 tiles of the scaled frame; what an ONNX Runtime/TensorRT backend would do."""

    name = "yunet-tiles"

    def __init__(self, model: str, scaling: Scaling) -> None:
        self.scaling = scaling
        self.net = cv2.FaceDetectorYN.create(model, "", (TILE, TILE), 0.7, 0.3, 5000)

    def detect(self, frame: Any) -> list[Detection]:
        factor = self.scaling.factor(frame.shape[1])
        small = frame if factor >= 1 else cv2.resize(frame, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA)
        height, width = small.shape[:2]
        found: list[Detection] = []
        step = TILE - OVERLAP
        for top in range(0, max(1, height - OVERLAP), step):
            for left in range(0, max(1, width - OVERLAP), step):
                tile = np.zeros((TILE, TILE, 3), np.uint8)  # a fixed shape: pad the last row and column
                part = small[top:top + TILE, left:left + TILE]
                tile[:part.shape[0], :part.shape[1]] = part
                _, faces = self.net.detect(tile)
                for f in faces if faces is not None else []:
                    box = ((f[0] + left) / factor, (f[1] + top) / factor, f[2] / factor, f[3] / factor)
                    found.append(Detection((float(box[0]), float(box[1]), float(box[2]), float(box[3])),
                                           float(f[14])))
        return nms(found)


def nms(found: list[Detection], threshold: float = 0.3) -> list[Detection]:
    kept: list[Detection] = []
    for detection in sorted(found, key=lambda d: d.score, reverse=True):
        if all(iou(detection.bbox, k.bbox) < threshold for k in kept):
            kept.append(detection)
    return kept


def per_frame_ms(detect: Callable[[Any], object], frames: list[Any], passes: int = 2) -> float:
    """CPU milliseconds of this thread per frame (OpenCV runs on it alone with setNumThreads(1)), the
    fastest of `passes` passes: on a shared machine, wall time mostly measures the other processes."""
    for frame in frames[:5]:  # warm-up: first-call allocations, input-size changes
        detect(frame)
    best = float("inf")
    for _ in range(passes):
        started = time.thread_time()
        for frame in frames:
            detect(frame)
        best = min(best, time.thread_time() - started)
    return 1000 * best / len(frames)


def photo_speed(shared: Path, model: str) -> None:
    accuracy = importlib.import_module("tests.detector.test_accuracy")
    options: dict[str, Callable[[], Any]] = {
        "full frame": lambda: YuNetDetector(model, scaling=Scaling(width=0)),
        "fixed 416 (old default)": lambda: YuNetDetector(model, scaling=Scaling(width=416)),
        "auto 28/40 (default)": lambda: YuNetDetector(model, scaling=Scaling()),
        "tiles 640x640 at auto": lambda: TiledDetector(model, Scaling()),
    }
    print("HD frames: dev photos fitted to 640x480 at the centre of the frame, one core, "
          "ms per frame / recall / precision")
    for width, height in SIZES:
        frames = [frame for _, frame, _, _ in accuracy.dev_frames(shared, (width, height))]
        auto_width = Scaling().detection_width(width)
        print(f" {width}x{height} ({len(frames)} frames; auto detects at {auto_width} wide):")
        full_ms = 0.0
        for name, make in options.items():
            detector = make()
            ms = per_frame_ms(detector.detect, frames)
            full_ms = full_ms or ms
            recall, precision, _ = accuracy.evaluate(detector, shared, (width, height))
            print(f"  {name:<26} {ms:7.1f} ms  ({ms / full_ms:4.0%} of full)  recall {recall:.3f}  "
                  f"precision {precision:.3f}")


def motion_boxes(previous: Any, current: Any, margin: float) -> list[tuple[int, int, int, int]]:
    """Regions that changed, in full-frame pixels: difference of 1/8-size grey frames, dilated."""
    def small(frame: Any) -> Any:
        return cv2.cvtColor(cv2.resize(frame, None, fx=0.125, fy=0.125, interpolation=cv2.INTER_AREA),
                            cv2.COLOR_BGR2GRAY)
    diff = cv2.absdiff(small(previous), small(current))
    _, mask = cv2.threshold(diff, 12, 255, cv2.THRESH_BINARY)
    mask = cv2.dilate(mask, np.ones((5, 5), np.uint8))
    count, _, stats, _ = cv2.connectedComponentsWithStats(mask)
    height, width = current.shape[:2]
    boxes = []
    for x, y, w, h, _ in stats[1:count]:
        x0, y0 = max(0, int((x - margin) * 8)), max(0, int((y - margin) * 8))
        x1, y1 = min(width, int((x + w + margin) * 8)), min(height, int((y + h + margin) * 8))
        boxes.append((x0, y0, x1 - x0, y1 - y0))
    return boxes


class MotionGated:
    def __init__(self, model: str, full_every: int = 15) -> None:
        self.detector = YuNetDetector(model, scaling=Scaling())
        self.previous: Any = None
        self.count = 0
        self.full_every = full_every
        self.pixels = 0.0  # fraction of the frame searched, summed

    def detect(self, frame: Any) -> list[Detection]:
        self.count += 1
        previous, self.previous = self.previous, frame
        if previous is None or self.count % self.full_every == 1:
            self.pixels += 1
            return self.detector.detect(frame)
        found: list[Detection] = []
        for x, y, w, h in motion_boxes(previous, frame, margin=4):
            self.pixels += w * h / (frame.shape[0] * frame.shape[1])
            for d in self.detector.detect(np.ascontiguousarray(frame[y:y + h, x:x + w])):
                found.append(Detection((d.bbox[0] + x, d.bbox[1] + y, d.bbox[2], d.bbox[3]), d.score))
        return nms(found)


def street_hd(shared: Path, width: int, height: int) -> list[tuple[Any, list[Box]]]:
    scenes = importlib.import_module("tests.detector.scenes")
    scene = scenes.street_scene(shared)
    background = cv2.resize(scenes.read_image(shared, scenes.BACKGROUND), (width, height))
    dx, dy = (width - 640) // 2, (height - 480) // 2
    frames = []
    for n in range(scene.frames):
        frame = background.copy()
        frame[dy:dy + 480, dx:dx + 640] = scene.render(n)
        truth = [scene.face_box(v, n) for v in scene.visits if scene.fully_visible(v, n)]
        frames.append((frame, [(x + dx, y + dy, w, h) for x, y, w, h in truth]))
    return frames


def motion_speed(shared: Path, model: str) -> None:
    print("motion-gated regions: street scene in the middle of an HD frame (the rest a still photo), one core")
    for width, height in SIZES[1:]:
        frames = street_hd(shared, width, height)
        images = [frame for frame, _ in frames]
        for name, detector in (("auto, every pixel", YuNetDetector(model, scaling=Scaling())),
                               ("auto, motion-gated", MotionGated(model))):
            found = total = 0
            started = time.thread_time()
            for frame, truth in frames:
                boxes = [d.bbox for d in detector.detect(frame)]
                total += len(truth)
                found += sum(1 for t in truth if any(iou(t, b) >= 0.5 for b in boxes))
            ms = 1000 * (time.thread_time() - started) / len(images)
            share = f", {detector.pixels / len(images):.0%} of the pixels searched" if isinstance(
                detector, MotionGated) else ""
            print(f"  {width}x{height} {name:<20} {ms:7.1f} ms  recall {found}/{total}{share}")


def hd_speed(shared: Path, model: str) -> None:
    cv2.setNumThreads(1)
    photo_speed(shared, model)
    motion_speed(shared, model)
