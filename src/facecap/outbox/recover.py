"""What to do when the outbox file is damaged (a disk error, a truncated copy): keep the damaged file
aside, copy every face that can still be read into a fresh outbox, and say so. The producer then runs on;
it never refuses to start, since a crash loop would stop capturing and lose everything after the damage."""

from __future__ import annotations

import logging
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

_ROW = "f.face_id, f.topic, f.content_type, f.properties, f.captured_at, f.committed_at, f.bytes, p.payload"
_CHUNK = 256
# With the highest seq unreadable, scanning stops after this many ranges in a row gave nothing.
_GIVE_UP_CHUNKS = 64


@dataclass(frozen=True)
class Recovery:
    damaged: Path  # where the damaged file was moved
    reason: str
    recovered: int  # faces copied into the fresh outbox


_SUFFIXES = ("", "-wal", "-shm")


def move_aside(path: Path) -> Path:
    """Rename the damaged file and its WAL companions; return the new name of the main file. Never onto an
    earlier damaged file (two in one second): that one may be the only copy of its faces."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    target = path.with_name(f"{path.name}.damaged-{stamp}")
    number = 1
    while any(Path(f"{target}{suffix}").exists() for suffix in _SUFFIXES):
        number += 1
        target = path.with_name(f"{path.name}.damaged-{stamp}-{number}")
    for suffix in _SUFFIXES:
        source = Path(f"{path}{suffix}")
        if source.exists():
            source.rename(f"{target}{suffix}")
    return target


def move_back(damaged: Path, path: Path) -> None:
    """Undo move_aside, replacing whatever was made at `path` since (a fresh outbox that could not be
    filled): the damaged file stays the one copy of its faces, for the next start to try again."""
    for suffix in _SUFFIXES:
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    for suffix in _SUFFIXES:
        source = Path(f"{damaged}{suffix}")
        if source.exists():
            source.rename(f"{path}{suffix}")


def readable_rows(damaged: Path) -> list[tuple[object, ...]]:
    """Every face row (with its payload) that can still be read, range by range, halving a range that
    fails down to single rows. Nothing here writes to the damaged file."""
    try:
        conn = sqlite3.connect(f"{damaged.resolve().as_uri()}?mode=ro", uri=True)
        # Lets SQLite open a file shorter than its header says (a truncated copy) instead of refusing it
        # whole; on a read-only connection it writes nothing.
        conn.execute("PRAGMA writable_schema=ON")
    except sqlite3.Error:
        return []
    try:
        low, top = _seq_bounds(conn)
        rows: list[tuple[object, ...]] = []
        misses = 0
        start = low
        while (top is not None and start <= top) or (top is None and misses < _GIVE_UP_CHUNKS):
            found = _read_range(conn, start, start + _CHUNK - 1)
            misses = 0 if found else misses + 1
            rows += found
            start += _CHUNK
        return rows
    finally:
        conn.close()


def _seq_bounds(conn: sqlite3.Connection) -> tuple[int, int | None]:
    """The lowest and highest face seq, where the damage lets them be read (None: unknown, scan on)."""
    bounds: list[int | None] = []
    for query in ("SELECT min(seq) FROM faces", "SELECT max(seq) FROM faces"):
        try:
            value = conn.execute(query).fetchone()[0]
            bounds.append(int(value) if value is not None else 0)
        except sqlite3.Error:
            bounds.append(None)
    return bounds[0] or 0, bounds[1]


def _read_range(conn: sqlite3.Connection, low: int, high: int) -> list[tuple[object, ...]]:
    query = f"SELECT {_ROW} FROM faces f JOIN payloads p ON p.seq = f.seq WHERE f.seq BETWEEN ? AND ?"  # noqa: S608
    try:
        return list(conn.execute(query, (low, high)))
    except sqlite3.Error:
        if low == high:
            return []
    middle = (low + high) // 2
    return _read_range(conn, low, middle) + _read_range(conn, middle + 1, high)
