"""Width and height of a JPEG or PNG from its header, without decoding it (no OpenCV needed)."""

from __future__ import annotations

import struct

# JPEG start-of-frame markers that carry the image size (baseline, progressive, lossless, ...).
_SOF_MARKERS = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height), or None when the header is not a readable JPEG or PNG."""
    if data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) >= 24 and data[12:16] == b"IHDR":
        width, height = struct.unpack(">II", data[16:24])
        return int(width), int(height)
    if not data.startswith(b"\xff\xd8"):
        return None
    offset = 2
    while offset + 4 <= len(data):
        if data[offset] != 0xFF:
            return None
        marker = data[offset + 1]
        if marker == 0xFF:  # fill byte
            offset += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # markers without a length
            offset += 2
            continue
        (length,) = struct.unpack(">H", data[offset + 2: offset + 4])
        if marker in _SOF_MARKERS and offset + 9 <= len(data):
            height, width = struct.unpack(">HH", data[offset + 5: offset + 9])
            return int(width), int(height)
        offset += 2 + length
    return None
