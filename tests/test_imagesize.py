"""Reading image sizes from headers, checked against images OpenCV encodes."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from facecap.imagesize import image_size

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("width", "height"), [(1, 1), (640, 480), (33, 1017)])
@pytest.mark.parametrize("ext", [".jpg", ".png"])
def test_sizes_match_encoder(width: int, height: int, ext: str) -> None:

    ok, encoded = cv2.imencode(ext, np.zeros((height, width, 3), dtype=np.uint8))
    assert ok
    assert image_size(encoded.tobytes()) == (width, height)


def test_progressive_jpeg() -> None:

    ok, encoded = cv2.imencode(".jpg", np.zeros((48, 64, 3), dtype=np.uint8), [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])
    assert ok
    assert image_size(encoded.tobytes()) == (64, 48)


@pytest.mark.parametrize("data", [b"", b"GIF89a", b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n\x00"])
def test_unreadable_headers(data: bytes) -> None:
    assert image_size(data) is None
