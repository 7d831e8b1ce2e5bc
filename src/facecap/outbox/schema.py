"""The outbox file: SQLite in WAL mode with synchronous=FULL, so a commit is on disk when it returns.

Faces and their payloads live in two tables: the schedule (attempts, next attempt) changes on every
redelivery, and keeping the payload apart means such an update rewrites a small row, not the crop.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
from pathlib import Path
from typing import IO

from ..errors import FacecapError

FILE_NAME = "outbox.db"
LOCK_NAME = "outbox.lock"
SCHEMA_VERSION = 1
# How a file of each older schema version becomes the next one: MIGRATIONS[v] is the SQL from version v to
# v + 1, run in the same transaction as the version bump. A release that changes the tables bumps
# SCHEMA_VERSION and adds its step here (a test checks that every version has one), so an upgrade keeps every
# pending face where it is; a rollback leaves the newer file alone (SchemaTooNew).
MIGRATIONS: dict[int, str] = {}

_TABLES = """
CREATE TABLE IF NOT EXISTS faces (
    seq INTEGER PRIMARY KEY,
    face_id TEXT NOT NULL UNIQUE,
    topic TEXT NOT NULL,
    content_type TEXT NOT NULL,
    properties TEXT NOT NULL,
    captured_at TEXT NOT NULL,
    committed_at REAL NOT NULL,
    bytes INTEGER NOT NULL,
    attempts INTEGER NOT NULL,
    next_attempt REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS faces_next_attempt ON faces (next_attempt);
CREATE TABLE IF NOT EXISTS payloads (seq INTEGER PRIMARY KEY, payload BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""

COUNTERS = ("delivered", "evicted", "refused")
_WAL_LIMIT_BYTES = 64 * 1024 * 1024

# SQLite's primary result codes for a file that is not a sound database (stable across SQLite versions).
_SQLITE_CORRUPT = 11
_SQLITE_NOTADB = 26


class SchemaTooNew(sqlite3.DatabaseError):
    """The file is the outbox of a newer facecap (this one was rolled back): sound, and its faces wait in it
    for that version, so it must stay where it is, untouched."""


def is_damage(exc: sqlite3.Error) -> bool:
    """True when the file itself is bad (corrupt, not a database). False for a disk that is full, failing or
    read-only, and for a newer facecap's outbox: the file is sound and must stay where it is, or its faces
    would be set aside for nothing."""
    if isinstance(exc, SchemaTooNew):
        return False
    code = getattr(exc, "sqlite_errorcode", None)  # Python >= 3.11
    if code is not None:
        return code & 0xFF in (_SQLITE_CORRUPT, _SQLITE_NOTADB)
    # Python 3.10 (JetPack 6) has only the message, which SQLite words the same for these two codes.
    message = str(exc)
    return "malformed" in message or "not a database" in message


def keep_private(path: Path) -> None:
    """Make `path` (created if missing) readable by its owner only: pending faces are personal data, and the
    outbox may live outside the component's own 0700 work folder (outbox.dir, `facecap send --outbox`) under
    a umask that lets everyone read. SQLite gives its -wal and -shm files the database's mode; ones left by
    an older facecap are narrowed too."""
    for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        try:
            descriptor = os.open(file, os.O_RDWR | (os.O_CREAT if file == path else 0), 0o600)
        except OSError:
            continue  # missing, or a disk that refuses: SQLite says so in its own words next
        try:
            with contextlib.suppress(OSError):  # not ours to change (another owner): the folder's mode protects it
                os.fchmod(descriptor, 0o600)
        finally:
            os.close(descriptor)


def connect_writer(path: Path) -> sqlite3.Connection:
    """The owner's connection. Raises sqlite3.DatabaseError when the file is not a usable outbox (see
    `is_damage`) or the disk refuses the writes that opening makes."""
    keep_private(path)
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        # FULL: the WAL is synced at every commit, so a committed face survives a power cut.
        conn.execute("PRAGMA synchronous=FULL")
        # Set, not inherited from the build (Debian's is on): zeroing a delivered crop's pages would write it
        # to the flash a second time, doubling the wear; the file is its owner's only, and pages are reused.
        conn.execute("PRAGMA secure_delete=FAST")
        # Back to 64 MiB after each checkpoint: a start or a bridge return that reschedules a large backlog
        # would otherwise leave the WAL at its largest until the process ends.
        conn.execute(f"PRAGMA journal_size_limit={_WAL_LIMIT_BYTES}")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise SchemaTooNew(f"it was written by a newer facecap (outbox schema version {version}, this one "
                               f"knows {SCHEMA_VERSION}) and is left as it is for that version")
        # Older versions step up in place; a new file (version 0) gets the tables. One transaction, so a
        # reader never sees a half-made or half-migrated outbox.
        steps = "".join(MIGRATIONS[v] + ";" for v in range(version, SCHEMA_VERSION)) if version else ""
        conn.executescript(f"BEGIN IMMEDIATE; {steps} {_TABLES} PRAGMA user_version={SCHEMA_VERSION}; COMMIT;")
        # Reads every row of the small table: a damaged page shows up now, not in the middle of a run.
        conn.execute("SELECT count(*), sum(bytes), max(attempts) FROM faces").fetchone()
        conn.execute("SELECT count(*) FROM payloads").fetchone()
    except BaseException:
        conn.close()
        raise
    return conn


def connect_reader(path: Path) -> sqlite3.Connection:
    """A read-only connection that never writes or recovers anything: safe while the owner runs."""
    if not path.is_file():
        raise FileNotFoundError(f"no outbox at {path}")
    # On a read-only filesystem (ext4 remounts so after eMMC errors) a WAL file cannot be read even read-only:
    # SQLite needs its -shm. Nothing can write there, so reading it as immutable is safe.
    immutable = "&immutable=1" if os.statvfs(path).f_flag & os.ST_RDONLY else ""
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro{immutable}", uri=True, check_same_thread=False,
                           timeout=30)
    if conn.execute("PRAGMA user_version").fetchone()[0] == 0:
        # Its owner created the file a moment ago and has not made the tables yet: an empty outbox.
        conn.close()
        conn = sqlite3.connect(":memory:", check_same_thread=False)
        conn.executescript(_TABLES)
    conn.execute("SELECT count(*) FROM faces").fetchone()
    return conn


class OutboxBusyError(FacecapError):
    """Another process owns the outbox."""


def claim(lock_path: Path) -> IO[str]:
    """Become the outbox's only writer: two producers on one outbox would publish each other's faces and
    keep wrong counts. The lock goes with the process, so a killed owner never leaves it stale."""
    # Owner-only: another user who could open it could hold the lock and keep the producer from starting.
    handle = os.fdopen(os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600), "r+")
    with contextlib.suppress(OSError):  # another owner's (shared folder): usable, just not ours to narrow
        os.fchmod(handle.fileno(), 0o600)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        owner = handle.read().strip() or "unknown"
        handle.close()
        raise OutboxBusyError(f"outbox {lock_path.parent} is in use by another process (pid {owner}); "
                              "`facecap outbox status` reads it safely") from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle
