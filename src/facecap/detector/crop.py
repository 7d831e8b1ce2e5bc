"""Cutting, judging and encoding face crops. No state, no I/O: every function is a plain transformation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias

import cv2

from .tracking import Box

if TYPE_CHECKING:
    from cv2.typing import MatLike

    Image: TypeAlias = MatLike
else:
    Image = Any  # cv2.typing exists only in OpenCV >= 4.8 builds; a Jetson's own OpenCV may be older

# Shot quality saturates: a face this sharp (variance of the Laplacian at 64x64) or this large (pixels,
# shorter side) is worth half of a perfect one on that criterion. Measured on the dev photos' faces:
# median sharpness 840 (10th percentile 340); with a horizontal motion blur of 1/15 of the face width,
# median 310. 400 sits between, where the measure separates them best.
SHARPNESS_HALF = 400.0
SIZE_HALF = 80.0
# A face cut by the frame edge is still better than nothing, but a whole face of fair quality beats it.
CUT_PENALTY = 0.25
_SHARPNESS_SIDE = 64


@dataclass(frozen=True)
class CropSettings:
    padding: float = 0.25
    size: int = 0
    format: str = "jpeg"
    jpeg_quality: int = 90
    png_compression: int = 3
    max_payload_bytes: int = 1024 * 1024


def padded_box(bbox: Box, padding: float, frame_width: int, frame_height: int) -> tuple[int, int, int, int]:
    """A square around the face centre, `padding` of the face's larger side added on each side, clamped to
    the frame. Returns integer (x0, y0, x1, y1), x1/y1 exclusive; empty if the face is outside the frame."""
    x, y, w, h = bbox
    side = max(w, h) * (1 + 2 * padding)
    cx, cy = x + w / 2, y + h / 2
    x0 = max(0, round(cx - side / 2))
    y0 = max(0, round(cy - side / 2))
    x1 = min(frame_width, round(cx + side / 2))
    y1 = min(frame_height, round(cy + side / 2))
    return x0, y0, max(x0, x1), max(y0, y1)


def is_cut(bbox: Box, frame_width: int, frame_height: int, margin: int) -> bool:
    """True when the face box reaches within `margin` pixels of the frame edge (part of it may be missing)."""
    x, y, w, h = bbox
    return x < margin or y < margin or x + w > frame_width - margin or y + h > frame_height - margin


def face_region(frame: Image, bbox: Box) -> Image:
    """The face box itself, clamped to the frame (a view, not a copy)."""
    height, width = frame.shape[:2]
    x, y, w, h = bbox
    x0, y0 = max(0, int(x)), max(0, int(y))
    x1, y1 = min(width, round(x + w)), min(height, round(y + h))
    return frame[y0:max(y0, y1), x0:max(x0, x1)]


def sharpness(face: Image) -> float:
    """Variance of the Laplacian of the face scaled to 64x64 grey: high for crisp edges, low for blur.
    Scaling first makes faces of different sizes comparable."""
    if face.size == 0:
        return 0.0
    grey = cv2.cvtColor(face, cv2.COLOR_BGR2GRAY) if face.ndim == 3 else face
    small = cv2.resize(grey, (_SHARPNESS_SIDE, _SHARPNESS_SIDE), interpolation=cv2.INTER_AREA)
    return float(cv2.Laplacian(small, cv2.CV_64F).var())


def shot_quality(sharp: float, face_size: float, score: float, cut: bool) -> float:
    """How good a crop is for a person's record, in [0, 1): sharp, large, confidently detected and whole."""
    sharp_term = sharp / (sharp + SHARPNESS_HALF)
    size_term = face_size / (face_size + SIZE_HALF)
    quality = max(0.0, min(1.0, score)) * sharp_term * size_term
    return quality * CUT_PENALTY if cut else quality


def cut_crop(frame: Image, bbox: Box, padding: float) -> Image:
    """The padded crop as a view of the frame (copy it to keep it beyond the frame's lifetime)."""
    height, width = frame.shape[:2]
    x0, y0, x1, y1 = padded_box(bbox, padding, width, height)
    return frame[y0:y1, x0:x1]


def square_resize(crop: Image, size: int) -> Image:
    """Scale to size x size; a crop clamped by the frame edge is padded with black so the face keeps its
    proportions."""
    height, width = crop.shape[:2]
    side = max(height, width)
    if height != width:
        top, left = (side - height) // 2, (side - width) // 2
        crop = cv2.copyMakeBorder(crop, top, side - height - top, left, side - width - left,
                                  cv2.BORDER_CONSTANT, value=(0, 0, 0))
    interpolation = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
    resized: Image = cv2.resize(crop, (size, size), interpolation=interpolation)
    return resized


def encode(crop: Image, settings: CropSettings) -> bytes:
    """Encode as JPEG or PNG, scaled to `size` if set, and scaled down further until it fits the payload
    limit. Raises ValueError for an empty crop or one that cannot be made small enough."""
    if crop.size == 0:
        raise ValueError("empty crop")
    image = square_resize(crop, settings.size) if settings.size else crop
    if settings.format == "png":
        extension, params = ".png", [cv2.IMWRITE_PNG_COMPRESSION, settings.png_compression]
    else:
        extension, params = ".jpg", [cv2.IMWRITE_JPEG_QUALITY, settings.jpeg_quality]
    while True:  # each step takes 30 % off each side, down to the 16 px floor
        ok, buffer = cv2.imencode(extension, image, params)
        if not ok:
            raise ValueError(f"OpenCV could not encode a {image.shape} crop as {settings.format}")
        if len(buffer) <= settings.max_payload_bytes:
            return buffer.tobytes()
        height, width = image.shape[:2]
        if min(height, width) < 16:
            break
        image = cv2.resize(image, (max(1, int(width * 0.7)), max(1, int(height * 0.7))),
                           interpolation=cv2.INTER_AREA)
    raise ValueError(f"crop does not fit in {settings.max_payload_bytes} bytes even when scaled down")
