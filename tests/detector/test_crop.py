"""Crop geometry, shot quality and encoding on synthetic images."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from cv2.typing import MatLike

from facecap.contract import sniff_content_type
from facecap.detector.crop import (
    CropSettings,
    cut_crop,
    encode,
    face_region,
    is_cut,
    padded_box,
    sharpness,
    shot_quality,
    square_resize,
)

pytestmark = pytest.mark.unit


def checkerboard(side: int = 200, cell: int = 10) -> MatLike:
    pattern = ((np.indices((side, side)) // cell).sum(axis=0) % 2 * 255).astype(np.uint8)
    image: MatLike = cv2.cvtColor(pattern, cv2.COLOR_GRAY2BGR)
    return image


def decode(payload: bytes) -> MatLike:
    image = cv2.imdecode(np.frombuffer(payload, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None
    return image


def test_padded_box_is_a_square_around_the_face_centre() -> None:
    assert padded_box((100, 100, 80, 100), 0.25, 640, 480) == (65, 75, 215, 225)


def test_padded_box_is_clamped_to_the_frame() -> None:
    assert padded_box((-10, 400, 100, 100), 0.5, 640, 480) == (0, 350, 140, 480)
    x0, y0, x1, y1 = padded_box((700, 500, 50, 50), 0.25, 640, 480)  # entirely outside
    assert x1 - x0 == 0 or y1 - y0 == 0


@pytest.mark.parametrize(
    ("box", "cut"),
    [((10, 10, 50, 50), False), ((0, 10, 50, 50), True), ((1, 10, 50, 50), True), ((590, 10, 50, 50), True),
     ((589, 10, 48, 50), False), ((100, 429, 50, 50), True), ((-5, 100, 50, 50), True)],
)
def test_is_cut_marks_faces_at_the_frame_edge(box: tuple[float, float, float, float], cut: bool) -> None:
    assert is_cut(box, 640, 480, margin=2) is cut


def test_sharpness_prefers_crisp_edges_and_ignores_scale() -> None:
    crisp = checkerboard()
    blurred = cv2.GaussianBlur(crisp, (0, 0), 4)
    assert sharpness(crisp) > 5 * sharpness(blurred)
    # The same content at half size measures alike, so big and small faces are compared fairly.
    half = cv2.resize(crisp, (100, 100), interpolation=cv2.INTER_AREA)
    assert sharpness(half) == pytest.approx(sharpness(crisp), rel=0.35)
    assert sharpness(np.zeros((0, 0, 3), np.uint8)) == 0.0


def test_shot_quality_orders_the_criteria() -> None:
    base = shot_quality(800, 120, 0.9, cut=False)
    assert 0 < base < 1
    assert shot_quality(200, 120, 0.9, cut=False) < base  # blurrier
    assert shot_quality(800, 60, 0.9, cut=False) < base  # smaller
    assert shot_quality(800, 120, 0.75, cut=False) < base  # less confident
    # A whole face of half the sharpness and two thirds the size still beats a cut one.
    assert shot_quality(800, 120, 0.9, cut=True) < shot_quality(400, 80, 0.8, cut=False)


def test_cut_crop_is_a_view_and_face_region_is_clamped() -> None:
    frame = np.zeros((480, 640, 3), np.uint8)
    crop = cut_crop(frame, (100, 100, 80, 80), 0.25)
    assert crop.shape == (120, 120, 3)
    assert np.shares_memory(crop, frame)
    assert face_region(frame, (-20, 450, 100, 100)).shape == (30, 80, 3)


def test_square_resize_keeps_proportions_with_black_bars() -> None:
    crop = np.full((100, 50, 3), 200, np.uint8)
    out = square_resize(crop, 64)
    assert out.shape == (64, 64, 3)
    assert out[32, 0].tolist() == [0, 0, 0] and out[32, 32].tolist() == [200, 200, 200]


def test_encode_jpeg_and_png() -> None:
    crop = checkerboard(120)
    jpeg = encode(crop, CropSettings(format="jpeg", jpeg_quality=80))
    png = encode(crop, CropSettings(format="png", size=64))
    assert sniff_content_type(jpeg) == "image/jpeg"
    assert sniff_content_type(png) == "image/png"
    assert decode(png).shape == (64, 64, 3)
    low = encode(crop, CropSettings(format="jpeg", jpeg_quality=20))
    assert len(low) < len(jpeg)


def test_encode_scales_down_until_the_crop_fits() -> None:
    noise = np.random.default_rng(1).integers(0, 255, (800, 800, 3), dtype=np.uint8)
    payload = encode(noise, CropSettings(format="png", max_payload_bytes=100_000))
    assert len(payload) <= 100_000
    assert decode(payload).shape[0] < 800


def test_encode_scales_down_as_far_as_it_takes_to_fit() -> None:
    """A large output.size with a small maxPayloadBytes, both allowed: twelve steps of 0.7 from 4096 pixels
    still left 56 pixels, which did not fit, and every face failed. The only floor is 16 pixels."""
    big = square_resize(checkerboard(400, cell=7), 4096)
    payload = encode(big, CropSettings(format="png", size=4096, max_payload_bytes=1024))
    assert len(payload) <= 1024
    assert 16 <= decode(payload).shape[0] < 4096 * 0.7 ** 12


def test_encode_refuses_an_empty_crop() -> None:
    with pytest.raises(ValueError, match="empty"):
        encode(np.zeros((0, 10, 3), np.uint8), CropSettings())
