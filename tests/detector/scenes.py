"""Test videos made from the shared dev photos: people (photo cut-outs around their face) enter a
street scene, move, and leave. Every frame's true face boxes are known, so messages can be checked
against them. Used by the detector tests and bench/detector.py; nothing is written into the repo."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
from cv2.typing import MatLike as Image

Box = tuple[float, float, float, float]

WIDTH, HEIGHT, FPS = 640, 480, 10.0
FACE_HEIGHT = 120  # pixels: every person's face is scaled to this height
BACKGROUND = "opencv__building.jpg"  # a face-free photo from the dev set
# Single-face frontal photos from the dev set (by file name), one per person.
PEOPLE = ("debfacedetect__grace_hopper_512x512.jpg", "facerec__johnsnow_test1.jpg",
          "skimage__astronaut.png", "facerec__img1.jpg")


def read_image(shared: Path, file: str) -> Image:
    image = cv2.imread(str(shared / "faces" / "dev" / "images" / file), cv2.IMREAD_COLOR)
    assert image is not None, f"cannot read {file}"
    return image


def load_manifest(shared: Path) -> dict[str, dict[str, object]]:
    data = json.loads((shared / "faces" / "dev" / "manifest.json").read_text())
    return {entry["file"]: entry for entry in data["images"]}


def fit_image(image: Image, width: int = WIDTH, height: int = HEIGHT) -> tuple[Image, float]:
    """Scale (up or down) to fit inside width x height, keeping proportions. Returns the image and factor."""
    h, w = image.shape[:2]
    factor = min(width / w, height / h)
    size = (max(1, round(w * factor)), max(1, round(h * factor)))
    interpolation = cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR
    return cv2.resize(image, size, interpolation=interpolation), factor


@dataclass(frozen=True)
class Sprite:
    """A cut-out around one face; `face` is the face box inside the cut-out."""

    name: str
    image: Image
    face: Box


def make_sprite(shared: Path, file: str, margin: float = 0.45) -> Sprite:
    entry = load_manifest(shared)[file]
    image = read_image(shared, file)
    x, y, w, h = (float(v) for v in entry["boxes"][0])  # type: ignore[index]
    x0, y0 = max(0, int(x - margin * w)), max(0, int(y - margin * h))
    x1, y1 = min(image.shape[1], int(x + w + margin * w)), min(image.shape[0], int(y + h + margin * h))
    cut = image[y0:y1, x0:x1]
    factor = FACE_HEIGHT / h
    cut = cv2.resize(cut, (round(cut.shape[1] * factor), round(cut.shape[0] * factor)), interpolation=cv2.INTER_AREA)
    return Sprite(Path(file).stem, cut, ((x - x0) * factor, (y - y0) * factor, w * factor, h * factor))


@dataclass(frozen=True)
class Visit:
    """One person in view: the sprite's top-left moves linearly from `start` to `end` over the frames
    first..last (inclusive)."""

    person: int
    first: int
    last: int
    start: tuple[float, float]
    end: tuple[float, float]

    def position(self, frame: int) -> tuple[int, int]:
        t = (frame - self.first) / max(1, self.last - self.first)
        return (round(self.start[0] + t * (self.end[0] - self.start[0])),
                round(self.start[1] + t * (self.end[1] - self.start[1])))


@dataclass
class Scene:
    sprites: list[Sprite]
    visits: list[Visit]
    background: Image
    frames: int

    def face_box(self, visit: Visit, frame: int) -> Box:
        px, py = visit.position(frame)
        fx, fy, fw, fh = self.sprites[visit.person].face
        return (px + fx, py + fy, fw, fh)

    def visible_face_box(self, visit: Visit, frame: int) -> Box:
        """The part of the face inside the frame (what a detector can see)."""
        x, y, w, h = self.face_box(visit, frame)
        x0, y0 = max(0.0, x), max(0.0, y)
        x1, y1 = min(float(WIDTH), x + w), min(float(HEIGHT), y + h)
        return (x0, y0, max(0.0, x1 - x0), max(0.0, y1 - y0))

    def fully_visible(self, visit: Visit, frame: int) -> bool:
        x, y, w, h = self.face_box(visit, frame)
        return visit.first <= frame <= visit.last and x >= 0 and y >= 0 and x + w <= WIDTH and y + h <= HEIGHT

    def render(self, frame: int) -> Image:
        canvas: Image = self.background.copy()
        for visit in self.visits:
            if visit.first <= frame <= visit.last:
                _paste(canvas, self.sprites[visit.person].image, visit.position(frame))
        return canvas

    def write(self, path: Path, loops: int = 1) -> Path:
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), FPS, (WIDTH, HEIGHT))
        assert writer.isOpened(), f"cannot write {path}"
        for _ in range(loops):
            for frame in range(self.frames):
                writer.write(self.render(frame))
        writer.release()
        return path


def _paste(canvas: Image, sprite: Image, at: tuple[int, int]) -> None:
    x, y = at
    h, w = sprite.shape[:2]
    cx0, cy0 = max(0, x), max(0, y)
    cx1, cy1 = min(canvas.shape[1], x + w), min(canvas.shape[0], y + h)
    if cx1 <= cx0 or cy1 <= cy0:
        return
    canvas[cy0:cy1, cx0:cx1] = sprite[cy0 - y:cy1 - y, cx0 - x:cx1 - x]


def street_scene(shared: Path) -> Scene:
    """Four visits by three people, 19 s at 10 fps: A crosses left to right along the top while B crosses
    right to left along the bottom (both in view at once), C appears mid-frame and leaves downwards, and
    A comes back right to left. Gaps between visits of the same place exceed a second, so each visit is
    its own track."""
    sprites = [make_sprite(shared, file) for file in PEOPLE[:3]]
    background = cv2.resize(read_image(shared, BACKGROUND), (WIDTH, HEIGHT), interpolation=cv2.INTER_AREA)
    a, b, c = (s.image.shape[1] for s in sprites)
    bottom = HEIGHT - sprites[1].image.shape[0] - 5
    visits = [
        Visit(0, 0, 45, (-a * 0.6, 10), (WIDTH - a * 0.4, 10)),
        Visit(1, 25, 75, (WIDTH - b * 0.4, bottom), (-b * 0.6, bottom)),
        Visit(2, 95, 135, (WIDTH / 2 - c / 2, 120), (WIDTH / 2 - c / 2 + 30, HEIGHT - 30)),
        Visit(0, 150, 185, (WIDTH - a * 0.4, 60), (-a * 0.6, 60)),
    ]
    return Scene(sprites, visits, background, 190)


def match_visit(scene: Scene, frame: int, bbox: Box, threshold: float = 0.5) -> int | None:
    """Index of the visit whose true face box at `frame` overlaps `bbox` with IoU >= threshold."""
    from facecap.detector.tracking import iou

    best, best_iou = None, threshold
    for index, visit in enumerate(scene.visits):
        if visit.first <= frame <= visit.last:
            overlap = iou(scene.visible_face_box(visit, frame), bbox)
            if overlap >= best_iou:
                best, best_iou = index, overlap
    return best
