"""Mosquitto's store (mosquitto.db) checked before Mosquitto reads it.

Mosquitto 2.0.11 refuses to start on a store it cannot read ("Error: Couldn't open database."), and
Greengrass then restarts the EdgeBroker until it gives up: every component of the device loses its broker
until someone deletes the file by hand. Mosquitto saves to a new file and renames it over the store, but
it does not check its writes: a disk that fills up during a save (the outbox shares it) leaves a store cut
short in place of the good one. Storage that loses blocks does the same.

So the file is walked first, the way Mosquitto reads it: the header and format version, then each chunk's
type and declared length. A chunk Mosquitto knows that runs past the end of the file is what makes it
refuse; what it passes over (a partial chunk header at the very end, a chunk type it does not know) is
passed over here too, so no store it would load is taken from it. A store that fails is moved aside, never
deleted, and the broker starts with an empty one. What it held is not lost to the producers with an
outbox (the FaceDetector, `facecap send --outbox`): every face without a receipt is published again.
Clients restore their subscriptions when they find no session.
"""

from __future__ import annotations

import logging
import os
import struct
import time
from pathlib import Path
from typing import BinaryIO

log = logging.getLogger(__name__)

STORE_NAME = "mosquitto.db"
_MAGIC = bytes([0x00, 0xB5, 0x00]) + b"mosquitto db"
_HEADER = struct.Struct("!II")  # the header's CRC (unused by Mosquitto) and format version; then chunks
_CHUNK = struct.Struct("!II")  # chunk type and the length of what follows
_READ_VERSIONS = range(2, 7)  # what Mosquitto 2.0 reads
_WALKED_VERSIONS = {5, 6}  # chunks with their lengths in front: Mosquitto 1.6 and 2.0
_CHUNK_TYPES = range(1, 7)  # configuration, message, client message, retained, subscription, client


def store_problem(path: Path) -> str | None:
    """Why Mosquitto would refuse the store at `path`; None when it would load it, as far as its structure
    goes (also when there is none, or it is empty, which Mosquitto takes as empty)."""
    try:
        with open(path, "rb") as store:
            return _format_problem(store, os.fstat(store.fileno()).st_size)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"cannot be read by uid {os.geteuid()}: {exc.strerror}"


def _format_problem(store: BinaryIO, size: int) -> str | None:
    if size == 0:
        return None
    head = store.read(len(_MAGIC) + _HEADER.size)
    if len(head) < len(_MAGIC) + _HEADER.size or not head.startswith(_MAGIC):
        return "is not a Mosquitto store (its header is missing or wrong)"
    _, version = _HEADER.unpack_from(head, len(_MAGIC))
    if version not in _READ_VERSIONS:
        return f"has format version {version}, which Mosquitto does not read"
    return _chunks_problem(store, size) if version in _WALKED_VERSIONS else None


def _chunks_problem(store: BinaryIO, size: int) -> str | None:
    """Seeks from chunk to chunk, reading 8 bytes each: a store may hold hundreds of MB of queued faces."""
    while len(header := store.read(_CHUNK.size)) == _CHUNK.size:  # a partial header ends Mosquitto's read too
        kind, length = _CHUNK.unpack(header)
        at = store.tell()
        if kind in _CHUNK_TYPES and at + length > size:
            return (f"has a chunk that runs past the end of the file (byte {at + length} of {size}): it was cut "
                    "short")
        store.seek(length, os.SEEK_CUR)  # an unknown chunk is passed over, as Mosquitto does
    return None


def set_aside_unreadable_store(folder: Path) -> Path | None:
    """Move a store Mosquitto would refuse out of its way, saying why; return where it went (None: nothing to
    do)."""
    path = folder / STORE_NAME
    problem = store_problem(path)
    if problem is None:
        return None
    aside = folder / f"{STORE_NAME}.unreadable-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}"
    os.replace(path, aside)
    if problem.startswith("cannot be read"):
        # Mosquitto would start empty and overwrite it at its first save.
        log.error("%s %s: moved to %s before Mosquitto could overwrite it with an empty store. Give the file to "
                  "the component's user and move it back with the EdgeBroker stopped to restore what it held",
                  path, problem, aside.name)
    else:
        log.error("%s %s, and Mosquitto would refuse to start on it: moved to %s, and the broker starts with an "
                  "empty store. Faces the producers' outboxes hold are published again; queued messages of "
                  "clients without an outbox are in that file. A disk that filled up while Mosquitto saved "
                  "leaves such a file, as does storage that lost blocks: check free space and the disk",
                  path, problem, aside.name)
    return aside
