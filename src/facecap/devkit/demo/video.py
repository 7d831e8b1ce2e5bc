"""A sample camera for machines without one: a video of people who enter, cross the frame and leave.

The "people" are the public-domain astronaut photo (Eileen Collins, NASA) that scikit-image ships, so
every user's machine has the material and nothing is downloaded.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Visit:
    """One person crossing the frame: when, how big, and which way."""

    start_seconds: float
    duration_seconds: float
    size: int  # the portrait's side in pixels
    left_to_right: bool
    y: int


# Portraits of 280-320 pixels give faces of 50-60 pixels, above the detector's default minimum of 40.
DEFAULT_VISITS = (
    Visit(0.5, 4.0, 300, True, 100),
    Visit(5.5, 4.0, 280, False, 170),
    Visit(10.5, 3.5, 320, True, 40),
)


# `facecap demo --cameras 3` (and bench/cameras.py): each camera its own sample, three visits at other
# times, sizes, heights and directions. Cameras past these get visits drawn from a seeded generator.
CAMERA_VISITS = (
    DEFAULT_VISITS,
    (Visit(1.0, 3.5, 290, False, 60), Visit(5.5, 4.0, 310, True, 150), Visit(10.0, 4.0, 280, False, 90)),
    (Visit(0.8, 4.5, 300, True, 170), Visit(6.0, 3.5, 320, False, 30), Visit(10.5, 3.5, 290, True, 120)),
)


def camera_visits(index: int) -> tuple[Visit, ...]:
    """The visits of sample camera `index`: three people, one after another, so each is one track."""
    if index < len(CAMERA_VISITS):
        return CAMERA_VISITS[index]
    rng = random.Random(index)  # noqa: S311 - sample content, not security
    return tuple(Visit(0.5 + 5.0 * n + rng.uniform(0, 0.5), rng.uniform(3.5, 4.0), rng.randrange(280, 321, 10),
                       rng.random() < 0.5, rng.randrange(30, 171, 10)) for n in range(3))


def render_camera_video(path: Path, index: int) -> int:
    """Sample camera `index` (its own visits and background) written to `path`. Returns frames."""
    return render_video(path, visits=camera_visits(index), seed=7 + index)


def _portrait() -> Any:
    import cv2
    from skimage import data

    astronaut: Any = data.astronaut  # scikit-image has no type hints
    return cv2.cvtColor(astronaut(), cv2.COLOR_RGB2BGR)


def _background(width: int, height: int, seed: int = 7) -> Any:
    import numpy as np

    # A soft vertical gradient with a little texture, so JPEG crops of the edges are not flat.
    ramp = np.linspace(70, 150, height, dtype=np.float32)[:, None, None]
    noise = np.random.default_rng(seed).normal(0, 6, (height, width, 1)).astype(np.float32)
    return np.clip(np.repeat(ramp + noise, 3, axis=2), 0, 255).astype(np.uint8)


def render_frames(width: int = 640, height: int = 480, fps: float = 15.0,
                  visits: tuple[Visit, ...] = DEFAULT_VISITS, *, seed: int = 7) -> list[Any]:
    """Every frame of the sample, in memory (about 14 s at 15 fps: 200 frames of 640x480)."""
    import cv2

    portrait = _portrait()
    background = _background(width, height, seed)
    total = max(v.start_seconds + v.duration_seconds for v in visits) + 1.0
    frames = []
    for index in range(int(total * fps)):
        now = index / fps
        frame = background.copy()
        for visit in visits:
            progress = (now - visit.start_seconds) / visit.duration_seconds
            if not 0.0 <= progress <= 1.0:
                continue
            sprite = cv2.resize(portrait, (visit.size, visit.size), interpolation=cv2.INTER_AREA)
            if not visit.left_to_right:
                sprite = cv2.flip(sprite, 1)
            # Enter fully outside the frame and leave fully outside it, so every visit is one track.
            x = int(-visit.size + progress * (width + visit.size))
            if not visit.left_to_right:
                x = width - visit.size - x
            _paste(frame, sprite, x, visit.y)
        frames.append(frame)
    return frames


def _paste(frame: Any, sprite: Any, x: int, y: int) -> None:
    height, width = frame.shape[:2]
    size_y, size_x = sprite.shape[:2]
    left, top = max(x, 0), max(y, 0)
    right, bottom = min(x + size_x, width), min(y + size_y, height)
    if right <= left or bottom <= top:
        return
    frame[top:bottom, left:right] = sprite[top - y: bottom - y, left - x: right - x]


def render_video(path: Path, width: int = 640, height: int = 480, fps: float = 15.0,
                 visits: tuple[Visit, ...] = DEFAULT_VISITS, *, seed: int = 7) -> int:
    """Write the sample to `path` (MJPEG in AVI, which every OpenCV build can read back). Returns frames."""
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), fps, (width, height))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write {path}")
    frames = render_frames(width, height, fps, visits, seed=seed)
    for frame in frames:
        writer.write(frame)
    writer.release()
    return len(frames)
