"""Mosquitto's store (mosquitto.db) checked before Mosquitto reads it.

Mosquitto 2.0.11 refuses to start on a store it cannot read ("Error: Couldn't open database."), and
Greengrass then restarts the EdgeBroker until it gives up: every component of the device loses its broker
until someone deletes the file by hand. Mosquitto itself writes the store safely (a new file, fsync, then
a rename), so such a file comes from the storage under it: an SD card or eMMC that lost blocks, a file
system repaired after a power cut, a copy cut short.

So the file's structure is walked first: the header, then each chunk's declared length, which must end
exactly at the end of the file (a store Mosquitto wrote does; a truncated or overwritten one does not). A
store that fails is moved aside, never deleted, and the broker starts with an empty one. What it held is
not lost to the producers with an outbox (the FaceDetector, `facecap send --outbox`): every face without
a receipt is published again. Clients restore their subscriptions when they find no session.
"""

from __future__ import annotations

import logging
import os
import struct
import time
from pathlib import Path

log = logging.getLogger(__name__)

STORE_NAME = "mosquitto.db"
_MAGIC = bytes([0x00, 0xB5, 0x00]) + b"mosquitto db"
_HEADER = struct.Struct("!II")  # the header's CRC (unused by Mosquitto) and format version; then chunks
_CHUNK = struct.Struct("!II")  # chunk type and the length of what follows
_WALKED_VERSIONS = {5, 6}  # chunked with lengths: Mosquitto 1.6 and 2.0
_CHUNK_TYPES = range(1, 7)  # configuration, message, client message, retained, subscription, client


def store_problem(path: Path) -> str | None:
    """Why Mosquitto could not read the store at `path`; None when it can, as far as its structure goes
    (also when there is none, or it is empty, which Mosquitto takes as empty)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"cannot be read: {exc.strerror}"
    return _format_problem(data) if data else None


def _format_problem(data: bytes) -> str | None:
    if len(data) < len(_MAGIC) + _HEADER.size or not data.startswith(_MAGIC):
        return "is not a Mosquitto store (its header is missing or wrong)"
    _, version = _HEADER.unpack_from(data, len(_MAGIC))
    if version not in _WALKED_VERSIONS:
        return None  # another Mosquitto's format: left to it
    return _chunks_problem(data, len(_MAGIC) + _HEADER.size)


def _chunks_problem(data: bytes, at: int) -> str | None:
    while at < len(data):
        if at + _CHUNK.size > len(data):
            return f"ends inside a chunk header at byte {at} of {len(data)} (cut short)"
        kind, length = _CHUNK.unpack_from(data, at)
        if kind not in _CHUNK_TYPES:
            return f"has an unknown chunk type {kind} at byte {at} (overwritten)"
        at += _CHUNK.size + length
        if at > len(data):
            return f"has a chunk that runs past the end of the file ({len(data)} bytes: cut short)"
    return None


def set_aside_unreadable_store(folder: Path) -> Path | None:
    """Move an unreadable store out of Mosquitto's way, saying why; return where it went (None: nothing to do)."""
    path = folder / STORE_NAME
    problem = store_problem(path)
    if problem is None:
        return None
    aside = folder / f"{STORE_NAME}.unreadable-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}"
    os.replace(path, aside)
    log.error("%s %s, and Mosquitto would refuse to start on it: moved to %s, and the broker starts with an "
              "empty store. Faces the producers' outboxes hold are published again; queued messages of clients "
              "without an outbox are in that file. Check the storage: Mosquitto writes its store safely, so a "
              "file like this comes from the disk under it", path, problem, aside.name)
    return aside
