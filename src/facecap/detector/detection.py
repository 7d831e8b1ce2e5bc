"""Face detectors: YuNet (cv2.FaceDetectorYN) and the Haar cascade fallback, behind one small interface.

Both detect on a copy of the frame scaled down (detection cost grows with the pixel count) and return
boxes in the full frame's pixels, so crops can be cut at full resolution. The scale comes from the
smallest face wanted, not from the frame: the smallest face (`min_face_size` full-frame pixels) is shrunk
to `model_face_size` pixels, the size YuNet still finds reliably, so an HD camera keeps its small faces
(docs/detector.md). A fixed `width` overrides that, as before.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2

from ..errors import ConfigError
from ..validation import file_problem
from .crop import Image
from .scaling import Scaling
from .tracking import Box

log = logging.getLogger(__name__)

# The 2023mar YuNet model has the output layout OpenCV 4.8 introduced; older builds fail to load it.
YUNET_MIN_OPENCV = (4, 8)
HAAR_CASCADE = "haarcascade_frontalface_default.xml"
# Where distributions (and Jetson's JetPack OpenCV) install the cascades when cv2.data is absent.
_CASCADE_DIRS = ("/usr/share/opencv4/haarcascades", "/usr/share/opencv/haarcascades",
                 "/usr/local/share/opencv4/haarcascades")


@dataclass(frozen=True)
class Detection:
    bbox: Box  # x, y, w, h in full-frame pixels
    score: float


class FaceDetector(Protocol):
    name: str

    def detect(self, frame: Image) -> list[Detection]: ...


def opencv_version() -> tuple[int, int]:
    major, minor = cv2.__version__.split(".")[:2]
    return int(major), int("".join(ch for ch in minor if ch.isdigit()) or 0)


def _scaled(frame: Image, scaling: Scaling) -> tuple[Image, float]:
    """The frame scaled down for detection and the factor from full-frame to scaled pixels."""
    frame_width = frame.shape[1]
    width = scaling.detection_width(frame_width)
    if width >= frame_width:
        return frame, 1.0
    factor = width / frame_width
    size = (width, max(1, round(frame.shape[0] * factor)))
    small: Image = cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
    return small, factor


class YuNetDetector:
    name = "yunet"

    def __init__(self, model_path: str, *, score_threshold: float = 0.7, nms_threshold: float = 0.3,
                 scaling: Scaling | None = None, max_faces: int = 50) -> None:
        self.scaling = scaling or Scaling()
        self.max_faces = max_faces
        self._input_size = (320, 320)
        # top_k bounds the candidates before non-maximum suppression, not the faces returned.
        self._net = cv2.FaceDetectorYN.create(model_path, "", self._input_size, score_threshold,
                                              nms_threshold, 5000)

    def detect(self, frame: Image) -> list[Detection]:
        small, factor = _scaled(frame, self.scaling)
        size = (small.shape[1], small.shape[0])
        if size != self._input_size:
            self._net.setInputSize(size)
            self._input_size = size
        if small.ndim == 2:
            small = cv2.cvtColor(small, cv2.COLOR_GRAY2BGR)
        _, faces = self._net.detect(small)
        if faces is None:
            return []
        found = [
            Detection((float(f[0]) / factor, float(f[1]) / factor, float(f[2]) / factor, float(f[3]) / factor),
                      float(f[14]))
            for f in faces
        ]
        found.sort(key=lambda d: d.score, reverse=True)
        return found[: self.max_faces]


class HaarDetector:
    """Viola-Jones on the grey frame. It reports no confidence, so every face gets score 1.0."""

    name = "haar"

    def __init__(self, cascade_path: str = "", *, scaling: Scaling, scale_factor: float = 1.1,
                 min_neighbors: int = 5, min_size: int = 24, max_faces: int = 50) -> None:
        path = cascade_path or default_cascade_path()
        self._cascade = cv2.CascadeClassifier(path)
        if self._cascade.empty():
            raise ConfigError("detector", [("detection.haarCascadePath", f"cannot load a Haar cascade from {path}")])
        self.scaling = scaling
        self.scale_factor = scale_factor
        self.min_neighbors = min_neighbors
        self.min_size = min_size
        self.max_faces = max_faces

    def detect(self, frame: Image) -> list[Detection]:
        small, factor = _scaled(frame, self.scaling)
        grey = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY) if small.ndim == 3 else small
        min_side = max(1, round(self.min_size * factor))
        boxes = self._cascade.detectMultiScale(grey, scaleFactor=self.scale_factor,
                                               minNeighbors=self.min_neighbors, minSize=(min_side, min_side))
        found = [Detection((x / factor, y / factor, w / factor, h / factor), 1.0) for x, y, w, h in boxes]
        found.sort(key=lambda d: d.bbox[2] * d.bbox[3], reverse=True)
        return found[: self.max_faces]


def default_cascade_path() -> str:
    data = getattr(cv2, "data", None)
    folders = ([str(data.haarcascades)] if data is not None else []) + list(_CASCADE_DIRS)
    for folder in folders:
        candidate = Path(folder) / HAAR_CASCADE
        if candidate.is_file():
            return str(candidate)
    raise ConfigError("detector", [("detection.haarCascadePath",
                                    f"{HAAR_CASCADE} not found in {', '.join(folders)}; set the path")])


def yunet_unavailable_reason(model_path: str) -> str | None:
    """Why YuNet cannot run here, or None when it can."""
    if not model_path:
        return "no YuNet model given (detection.modelPath, --model or FACECAP_MODEL)"
    if not hasattr(cv2, "FaceDetectorYN") or opencv_version() < YUNET_MIN_OPENCV:
        return f"OpenCV {cv2.__version__} is too old for the YuNet 2023mar model (needs >= 4.8)"
    return None


def model_problem(model_path: str) -> str | None:
    """Why this OpenCV cannot load the file at `model_path` as a YuNet model (None: it can, or YuNet is not
    available here at all, which create_detector reports)."""
    if yunet_unavailable_reason(model_path) is not None:
        return None
    try:
        cv2.FaceDetectorYN.create(model_path, "", (320, 320))
    except cv2.error as exc:
        return _cannot_load(model_path, exc)
    return None


def _cannot_load(model_path: str, exc: cv2.error) -> str:
    return f"OpenCV cannot load {model_path} as a YuNet model: {str(exc).strip().splitlines()[-1]}"


def create_detector(kind: str, model_path: str, model_origin: str, *, score_threshold: float = 0.7,
                    nms_threshold: float = 0.3, scaling: Scaling, min_face_size: int = 40, max_faces: int = 50,
                    haar_cascade_path: str = "") -> FaceDetector:
    """Build the configured detector. `auto` falls back to Haar, with one clear warning, only when no
    model was given or OpenCV is too old; a model path that was given but is unusable is an error."""
    key = "detection.modelPath" if model_origin in ("", "detection.modelPath") else model_origin
    if kind in ("auto", "yunet"):
        reason = yunet_unavailable_reason(model_path)
        if reason is None:
            problem = file_problem(model_path, "YuNet model file")
            if problem:
                raise ConfigError("detector", [(key, problem)])
            try:
                return YuNetDetector(model_path, score_threshold=score_threshold, nms_threshold=nms_threshold,
                                     scaling=scaling, max_faces=max_faces)
            except cv2.error as exc:
                raise ConfigError("detector", [(key, _cannot_load(model_path, exc))]) from None
        if kind == "yunet":
            raise ConfigError("detector", [("detection.detector", f"yunet requested but {reason}")])
        log.warning("FALLING BACK TO THE HAAR CASCADE: %s. Haar is several times slower and misses "
                    "turned and small faces; install the model to use YuNet.", reason)
    return HaarDetector(haar_cascade_path, scaling=scaling, min_size=min_face_size, max_faces=max_faces)
