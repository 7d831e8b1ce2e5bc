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


@dataclass(frozen=True)
class Recovery:
    damaged: Path  # where the damaged file was moved
    reason: str
    recovered: int  # faces copied into the fresh outbox


def move_aside(path: Path) -> Path:
    """Rename the damaged file and its WAL companions; return the new name of the main file."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    target = path.with_name(f"{path.name}.damaged-{stamp}")
    for suffix in ("", "-wal", "-shm"):
        source = Path(f"{path}{suffix}")
        if source.exists():
            source.rename(f"{target}{suffix}")
    return target


def readable_rows(damaged: Path) -> list[tuple[object, ...]]:
    """Every face row (with its payload) that can still be read, chunk by chunk, then row by row where
    a chunk fails. Nothing here writes to the damaged file."""
    try:
        conn = sqlite3.connect(f"{damaged.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error:
        return []
    rows: list[tuple[object, ...]] = []
    try:
        top = conn.execute("SELECT max(seq) FROM faces").fetchone()[0] or 0
    except sqlite3.Error:
        top = _probe_top(conn)
    try:
        for start in range(0, top + 1, _CHUNK):
            rows += _read_range(conn, start, start + _CHUNK - 1)
    finally:
        conn.close()
    return rows


def _probe_top(conn: sqlite3.Connection) -> int:
    """max(seq) failed: walk the payload table's keys instead, or give up."""
    try:
        return int(conn.execute("SELECT max(seq) FROM payloads").fetchone()[0] or 0)
    except sqlite3.Error:
        return 0


def _read_range(conn: sqlite3.Connection, low: int, high: int) -> list[tuple[object, ...]]:
    query = f"SELECT {_ROW} FROM faces f JOIN payloads p ON p.seq = f.seq WHERE f.seq BETWEEN ? AND ?"  # noqa: S608 - constant text
    try:
        return list(conn.execute(query, (low, high)))
    except sqlite3.Error:
        pass
    rows: list[tuple[object, ...]] = []
    if low == high:
        return rows
    for seq in range(low, high + 1):
        try:
            rows += list(conn.execute(query, (seq, seq)))
        except sqlite3.Error:
            continue
    return rows
