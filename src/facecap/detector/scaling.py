"""How far a frame is scaled down before detection (pure, no OpenCV, so the configuration can build it).

YuNet's cost grows with the pixels it sees, and it finds a face reliably down to about 28 px (the dev
faces: recall is flat from 26 to 35 px for the smallest face, docs/detector.md). So the scale is chosen
from the smallest face wanted, not from the frame: a face of `min_face_size` full-frame pixels is shrunk
to `model_face_size` pixels. A 640x480 frame and a 1920x1080 frame are scaled by the same factor, and
the HD frame keeps its small faces (at a cost that grows with its pixel count).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Scaling"]


@dataclass(frozen=True)
class Scaling:
    """How far a frame is scaled down before detection. `width` set: to that width (0: not at all), the
    old fixed rule; else by model_face_size / min_face_size, whatever the frame size."""

    width: int | None = None
    min_face_size: int = 40
    model_face_size: int = 28

    def factor(self, frame_width: int) -> float:
        """Full-frame to detection pixels, never above 1 (upscaling adds cost and no detail)."""
        if self.width is not None:
            return 1.0 if self.width <= 0 or frame_width <= self.width else self.width / frame_width
        return min(1.0, self.model_face_size / max(1, self.min_face_size))

    def detection_width(self, frame_width: int) -> int:
        return max(1, round(frame_width * self.factor(frame_width)))
