"""Mosquitto's store walked before Mosquitto reads it (broker/store.py). A store that real Mosquitto wrote,
cut short at start, is in test_broker_bridge.py; here the other ways a file can be unreadable, on files
laid out as Mosquitto 2.0 lays them out (header, then chunks of type and length)."""

from __future__ import annotations

import logging
import struct
from pathlib import Path

import pytest

from facecap.broker.store import STORE_NAME, set_aside_unreadable_store, store_problem

pytestmark = pytest.mark.unit

MAGIC = bytes([0x00, 0xB5, 0x00]) + b"mosquitto db"


def store(*chunks: tuple[int, bytes], version: int = 6) -> bytes:
    body = b"".join(struct.pack("!II", kind, len(data)) + data for kind, data in chunks)
    return MAGIC + struct.pack("!II", 0, version) + body


@pytest.mark.parametrize(("content", "problem"), [
    (None, None),  # no store yet
    (b"", None),  # Mosquitto takes an empty file as an empty store
    (store((1, b"c" * 20), (2, b"m" * 300), (4, b"r" * 8)), None),
    (store((1, b"c" * 20), version=3), None),  # an older format Mosquitto reads: left to it
    # What Mosquitto 2.0.11 passes over and loads the rest of: a partial chunk header at the very end, a
    # chunk type it does not know (even one that claims more bytes than are left).
    (store((1, b"c" * 20)) + b"\x00\x00\x00", None),
    (store((1, b"c" * 20), (99, b"x")), None),
    (store((1, b"c" * 20), (99, b"x" * 50))[:-20], None),
    # What it refuses.
    (b"\x00" * 4096, "is not a Mosquitto store (its header is missing or wrong)"),  # blocks zeroed
    (MAGIC + b"\x00\x00", "is not a Mosquitto store (its header is missing or wrong)"),
    (store((1, b"c" * 20), version=7), "has format version 7, which Mosquitto does not read"),
    (store((1, b"c" * 20), (2, b"m" * 300))[:-100],
     "has a chunk that runs past the end of the file (byte 359 of 259): it was cut short"),
])
def test_a_store_is_read_as_mosquitto_would(tmp_path: Path, content: bytes | None, problem: str | None) -> None:
    path = tmp_path / STORE_NAME
    if content is not None:
        path.write_bytes(content)
    assert store_problem(path) == problem


def test_an_unreadable_store_is_moved_aside_and_a_good_one_left(tmp_path: Path,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    good = store((1, b"c" * 20), (2, b"m" * 300))
    (tmp_path / STORE_NAME).write_bytes(good)
    assert set_aside_unreadable_store(tmp_path) is None
    assert (tmp_path / STORE_NAME).read_bytes() == good
    (tmp_path / STORE_NAME).write_bytes(good[:-1])
    aside = set_aside_unreadable_store(tmp_path)
    assert aside is not None and aside.read_bytes() == good[:-1]
    assert not (tmp_path / STORE_NAME).exists()
    assert [r.levelno for r in caplog.records] == [logging.ERROR]
