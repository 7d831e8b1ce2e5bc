"""Read an outbox without touching it (read-only SQLite connection): safe while its producer runs."""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ..errors import FacecapError
from .schema import COUNTERS, FILE_NAME, connect_reader, is_damage


class OutboxReadError(FacecapError):
    """No outbox where one was named, or a file that cannot be read."""


@dataclass(frozen=True)
class OutboxStatus:
    path: str
    pending: int
    pending_bytes: int
    oldest_captured_at: str | None
    oldest_age_seconds: float | None  # since it was committed
    delivered: int
    evicted: int
    refused: int


@dataclass(frozen=True)
class PendingEntry:
    face_id: str
    captured_at: str
    attempts: int


def outbox_file(location: Path) -> Path:
    """DIR (the producer's outbox folder) or the outbox.db file itself."""
    return location if location.is_file() else location / FILE_NAME


def _open(location: Path) -> tuple[Path, sqlite3.Connection]:
    path = outbox_file(location)
    try:
        return path, connect_reader(path)
    except FileNotFoundError:
        raise OutboxReadError(f"{location}: no outbox here ({FILE_NAME} not found)") from None
    except sqlite3.Error as exc:
        if is_damage(exc):
            raise OutboxReadError(f"{path} cannot be read ({exc}); its producer moves a damaged outbox aside "
                                   "and recovers the readable faces at its next start") from None
        if not _may_read(path):
            raise OutboxReadError(f"{path} cannot be read by uid {os.geteuid()} ({exc}): run this as the "
                                   "component's user (sudo -u ggc_user facecap outbox ...)") from None
        raise OutboxReadError(f"{path} cannot be read ({exc}): the disk refuses (full, read-only or failing); "
                               "the file and its faces stay as they are") from None


def _may_read(path: Path) -> bool:
    """The file, and the shared-memory file a reader of a WAL database writes beside it, are open to us."""
    shm = path.with_name(path.name + "-shm")
    return os.access(path, os.R_OK) and (not shm.exists() or os.access(shm, os.R_OK | os.W_OK))


@contextmanager
def _snapshot(location: Path) -> Iterator[tuple[Path, sqlite3.Connection]]:
    """The outbox file and a connection inside one read transaction: every figure read in it agrees."""
    path, conn = _open(location)
    try:
        with conn:
            conn.execute("BEGIN")
            yield path, conn
    except sqlite3.Error as exc:
        raise OutboxReadError(f"{path} cannot be read: {exc}") from None
    finally:
        conn.close()


def read_status(location: Path) -> OutboxStatus:
    with _snapshot(location) as (path, conn):
        pending, total = conn.execute("SELECT count(*), coalesce(sum(bytes), 0) FROM faces").fetchone()
        oldest = conn.execute("SELECT captured_at, committed_at FROM faces ORDER BY seq LIMIT 1").fetchone()
        counters = {name: 0 for name in COUNTERS}
        counters.update(dict(conn.execute("SELECT name, value FROM counters")))
    return OutboxStatus(str(path), int(pending), int(total), oldest[0] if oldest else None,
                        max(0.0, time.time() - oldest[1]) if oldest else None,
                        counters["delivered"], counters["evicted"], counters["refused"])


def read_pending(location: Path) -> Iterator[PendingEntry]:
    with _snapshot(location) as (_, conn):
        for face_id, captured_at, attempts in conn.execute(
                "SELECT face_id, captured_at, attempts FROM faces ORDER BY seq"):
            yield PendingEntry(face_id, captured_at, int(attempts))
