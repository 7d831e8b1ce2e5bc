"""The durable outbox: faces wait here, on disk, until the cloud's receipt says they are stored.

`capture()` returns only after the face is committed and synced, so a face counts as captured (and is
published) only once a power cut can no longer lose it. The outbox is bounded by count and bytes; when
full, the configured policy evicts the oldest pending face or refuses the new one, counted and logged
once per episode.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from ..contract import OutgoingFace
from ..errors import FacecapError
from .config import OutboxSettings
from .recover import Recovery, move_aside, move_back, readable_rows
from .schema import COUNTERS, FILE_NAME, LOCK_NAME, claim, connect_writer, is_damage
from .window import LOST_PER_PASS

log = logging.getLogger(__name__)

# An episode of a full outbox ends when it is below this share of both limits again.
_ROOM_AGAIN = 0.9

T = TypeVar("T")


class OutboxWriteError(FacecapError):
    """A face could not be committed (the disk is full or failing); nothing of that call was kept."""


@dataclass(frozen=True)
class PendingFace:
    """A face waiting for its receipt, as the publisher reads it back."""

    face_id: str
    topic: str
    payload: bytes
    content_type: str
    user_properties: tuple[tuple[str, str], ...]
    attempts: int


@dataclass(frozen=True)
class OutboxCounts:
    pending: int
    pending_bytes: int
    delivered: int
    evicted: int
    refused: int


def face_bytes(face: OutgoingFace, properties: str) -> int:
    return len(face.payload) + len(properties) + len(face.topic)


class Outbox:
    """One outbox file, owned by one producer process. Thread-safe."""

    def __init__(self, folder: Path, settings: OutboxSettings | None = None) -> None:
        self.settings = settings or OutboxSettings()
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)  # a folder that exists keeps its mode
        self.path = folder / FILE_NAME
        self.recovery: Recovery | None = None
        self._lock = threading.RLock()
        self._owner = claim(folder / LOCK_NAME)
        try:
            self._conn = self._open()
        except BaseException:
            self._owner.close()
            raise
        self._full_since: float | None = None
        self._episode = {"evicted": 0, "refused": 0}
        self._page_size = int(self._conn.execute("PRAGMA page_size").fetchone()[0])
        count, total = self._conn.execute("SELECT count(*), coalesce(sum(bytes), 0) FROM faces").fetchone()
        self._count, self._bytes = int(count), int(total)
        self._counters = {name: 0 for name in COUNTERS}
        self._counters.update(dict(self._conn.execute("SELECT name, value FROM counters")))

    def _open(self) -> sqlite3.Connection:
        try:
            return connect_writer(self.path)
        except sqlite3.DatabaseError as exc:
            if not is_damage(exc):
                # A full or failing disk: the file is sound, and its faces go out once the disk lets us in.
                raise OutboxWriteError(f"cannot open outbox {self.path}: {exc}") from exc
            return self._salvage(str(exc))

    def _salvage(self, reason: str) -> sqlite3.Connection:
        """Set the damaged file aside and copy every face that can still be read into a fresh outbox. If the
        fresh one cannot be made, the damaged file goes back in place and OutboxWriteError is raised."""
        damaged = move_aside(self.path)
        rows = readable_rows(damaged)
        conn: sqlite3.Connection | None = None
        try:
            conn = connect_writer(self.path)
            _copy_rows(conn, rows)
        except sqlite3.Error as exc:
            if conn is not None:
                conn.close()
            move_back(damaged, self.path)
            raise OutboxWriteError(f"outbox {self.path} is damaged ({reason}) and a fresh one cannot be made: "
                                   f"{exc}") from exc
        self.recovery = Recovery(damaged, reason, len(rows))
        log.error("outbox %s was damaged (%s): moved it to %s and recovered %d readable faces into a fresh "
                  "outbox; faces that could not be read are lost unless `sqlite3 %s .recover` finds them",
                  self.path, reason, damaged, len(rows), damaged)
        return conn

    def _mending(self, work: Callable[[], T]) -> T:
        """Run `work` under the lock. If it finds the file damaged (a bad page that the start could not see,
        such as one of a crop), salvage the file as a start would and run `work` once more: one bad page must
        not stop the producer until it restarts."""
        with self._lock:
            try:
                return work()
            except sqlite3.DatabaseError as exc:
                if not is_damage(exc):
                    raise
                reason = str(exc)
            self._conn.close()
            try:
                self._conn = self._salvage(reason)
            except OutboxWriteError:
                self._conn = connect_writer(self.path)  # the damaged file is back: go on with what it allows
                raise
            self._reload_totals()
            return work()

    # --- capture ------------------------------------------------------------------------------------------

    def capture(self, faces: Sequence[OutgoingFace]) -> list[bool]:
        """Commit the faces in one synced transaction. Returns, per face, whether it is in the outbox
        (False: refused because the outbox is full and the policy is refuse-newest, or too big)."""
        now = time.time()
        try:
            return self._mending(lambda: self._capture(faces, now))
        except sqlite3.Error as exc:
            # Rolled back: the in-memory totals must forget this transaction too.
            self._reload_totals()
            raise OutboxWriteError(f"cannot write to outbox {self.path}: {exc}") from exc
        except OutboxWriteError:
            self._reload_totals()
            raise

    def _capture(self, faces: Sequence[OutgoingFace], now: float) -> list[bool]:
        with self._conn:
            self._conn.execute("BEGIN IMMEDIATE")
            return [self._insert(face, now) for face in faces]

    def _reload_totals(self) -> None:
        with self._lock:
            try:
                count, total = self._conn.execute("SELECT count(*), coalesce(sum(bytes), 0) FROM faces").fetchone()
                self._count, self._bytes = int(count), int(total)
                # From zero: a counter with no row yet was only ever added to by the rolled-back write.
                self._counters = {name: 0 for name in COUNTERS} | dict(
                    self._conn.execute("SELECT name, value FROM counters"))
            except sqlite3.Error:
                log.exception("cannot re-read the totals of outbox %s", self.path)

    def _insert(self, face: OutgoingFace, now: float) -> bool:
        properties = json.dumps(face.user_properties, separators=(",", ":"))
        size = face_bytes(face, properties)
        if not self._make_room(size, now):
            self._count_full("refused", 1)
            return False
        captured = dict(face.user_properties).get("captured-at", "")
        cursor = self._conn.execute(
            "INSERT OR IGNORE INTO faces (face_id, topic, content_type, properties, captured_at, committed_at, "
            "bytes, attempts, next_attempt) VALUES (?, ?, ?, ?, ?, ?, ?, 1, ?)",
            (face.face_id, face.topic, face.content_type, properties, captured, now, size,
             now + self.settings.redeliver_delay(1)))
        if cursor.rowcount == 0:
            return True  # the same face again: it is already waiting
        self._conn.execute("INSERT INTO payloads (seq, payload) VALUES (?, ?)", (cursor.lastrowid, face.payload))
        self._count += 1
        self._bytes += size
        return True

    def _make_room(self, size: int, now: float) -> bool:
        """Whether a face of `size` bytes may go in, evicting the oldest with drop-oldest. Raises
        OutboxWriteError when the disk is short of minFreeBytes and nothing may be evicted for it: the face
        then goes out without the outbox, which beats refusing it."""
        limits = self.settings
        if size > limits.max_bytes:
            return False
        if self._within_limits(size) and self._disk_fits(size):
            return True
        if limits.when_full == "refuse-newest":
            if self._within_limits(size):
                raise self._disk_short(size)
            return False
        evicted = 0
        while not self._within_limits(size):  # the count and byte limits: the oldest goes, as configured
            self._evict_oldest(None)
            evicted += 1
        # The disk: only faces overdue for their receipt. One published a moment ago has its receipt on the
        # way, which frees its pages; evicting it instead would repeat with the next face, and the next, so
        # that every face left the outbox just before its receipt. (A rolled-back batch undoes evictions.)
        while not self._disk_fits(size):
            if not self._evict_oldest(now):
                raise self._disk_short(size)
            evicted += 1
        self._count_full("evicted", evicted)
        return True

    def _evict_oldest(self, overdue_at: float | None) -> bool:
        """Delete the oldest pending face (with `overdue_at`, the oldest whose receipt is overdue then)."""
        if overdue_at is None:
            row = self._conn.execute("SELECT seq, bytes FROM faces ORDER BY seq LIMIT 1").fetchone()
        else:
            row = self._conn.execute("SELECT seq, bytes FROM faces WHERE next_attempt <= ? ORDER BY seq LIMIT 1",
                                     (overdue_at,)).fetchone()
        if row is None:
            return False
        self._delete_seqs([row[0]])
        self._bytes -= row[1]
        self._count -= 1
        return True

    def _within_limits(self, size: int) -> bool:
        return self._count + 1 <= self.settings.max_faces and self._bytes + size <= self.settings.max_bytes

    def _disk_fits(self, size: int) -> bool:
        """The face fits in the pages the file already has free (reused first), or in the disk's free space
        above minFreeBytes."""
        free_pages = self._conn.execute("PRAGMA freelist_count").fetchone()[0]
        if free_pages * self._page_size >= size:
            return True
        free = self._free_on_disk()
        # Unknown when the folder went away under the open file: SQLite judges the write itself.
        return free is None or free - self.settings.min_free_bytes >= size

    def _free_on_disk(self) -> int | None:
        """Bytes free on the outbox's disk for this user; None when the folder cannot be asked."""
        try:
            disk = os.statvfs(self.path.parent)
        except OSError:
            return None
        return disk.f_bavail * disk.f_frsize

    def _disk_short(self, size: int) -> OutboxWriteError:
        free = self._free_on_disk()
        said = "free space unknown" if free is None else f"{free} bytes free"
        return OutboxWriteError(f"the disk of outbox {self.path} has {said}, less than outbox.minFreeBytes "
                                f"({self.settings.min_free_bytes}) plus this face ({size} bytes)")

    def _count_full(self, counter: str, amount: int) -> None:
        if not amount:
            return
        self._add_counter(counter, amount)
        self._episode[counter] += amount
        if self._full_since is None:
            self._full_since = time.monotonic()
            action = "evicting the oldest pending faces" if counter == "evicted" else "refusing new faces"
            log.warning("outbox %s is full (%d faces, %d bytes; limits %d faces, %d bytes, and %d bytes left free "
                        "on its disk: minFreeBytes): %s until receipts make room (whenFull %s)", self.path,
                        self._count, self._bytes, self.settings.max_faces, self.settings.max_bytes,
                        self.settings.min_free_bytes, action, self.settings.when_full)

    def _check_room_again(self) -> None:
        with self._lock:
            if self._full_since is None:
                return
            limits = self.settings
            typical = self._bytes // self._count if self._count else 1
            # The disk too: an episode the disk floor began is over only once a face fits on it again.
            if (self._count > _ROOM_AGAIN * limits.max_faces or self._bytes > _ROOM_AGAIN * limits.max_bytes
                    or not self._disk_fits(typical)):
                return
            log.warning("outbox %s has room again after %.0f s full: %d faces evicted, %d refused in that time",
                        self.path, time.monotonic() - self._full_since, self._episode["evicted"],
                        self._episode["refused"])
            self._full_since = None
            self._episode = {"evicted": 0, "refused": 0}

    def _add_counter(self, name: str, amount: int) -> None:
        if amount:
            self._counters[name] += amount
            self._conn.execute("INSERT INTO counters (name, value) VALUES (?, ?) ON CONFLICT(name) DO UPDATE "
                               "SET value = value + excluded.value", (name, amount))

    def _delete_seqs(self, seqs: Sequence[int]) -> None:
        marks = ",".join("?" * len(seqs))
        self._conn.execute(f"DELETE FROM faces WHERE seq IN ({marks})", seqs)  # noqa: S608 - only placeholders
        self._conn.execute(f"DELETE FROM payloads WHERE seq IN ({marks})", seqs)  # noqa: S608

    # --- receipts and redelivery ----------------------------------------------------------------------

    def delivered(self, face_ids: Iterable[str]) -> int:
        """Remove faces the cloud confirmed; returns how many were still here."""
        ids = list(dict.fromkeys(face_ids))
        try:
            removed = self._mending(lambda: self._delete_ids(ids))
        except sqlite3.Error:
            self._reload_totals()  # rolled back: the counter it added to in memory too
            raise
        self._check_room_again()
        return removed

    def _delete_ids(self, ids: list[str]) -> int:
        removed, removed_bytes = 0, 0
        with self._conn:
            self._conn.execute("BEGIN IMMEDIATE")
            for start in range(0, len(ids), 500):
                chunk = ids[start:start + 500]
                marks = ",".join("?" * len(chunk))
                rows = self._conn.execute(
                    f"SELECT seq, bytes FROM faces WHERE face_id IN ({marks})", chunk).fetchall()  # noqa: S608
                if rows:
                    self._delete_seqs([seq for seq, _ in rows])
                    removed += len(rows)
                    removed_bytes += sum(nbytes for _, nbytes in rows)
            self._add_counter("delivered", removed)
        # Only once committed: a delete that was rolled back must not change the totals.
        self._count -= removed
        self._bytes -= removed_bytes
        return removed

    def take_due(self, limit: int, now: float | None = None, overdue: bool = True,
                 lost: Sequence[str] = ()) -> list[PendingFace]:
        """The faces whose receipt is overdue (oldest schedule first), rescheduled with backoff as they
        are handed out: the caller publishes each of them again. `overdue` False (while receipts keep
        coming, those of the other faces are on their way): only the faces made due at once (due_now,
        resume), and of the overdue ones those in `lost`."""
        now = time.time() if now is None else now
        return self._mending(lambda: self._take_due(limit, now, overdue, lost))

    def _take_due(self, limit: int, now: float, overdue: bool, lost: Sequence[str]) -> list[PendingFace]:
        ceiling = now + self.settings.longest_redeliver_delay()
        # While overdue faces are held back, only those scheduled at 0 (made due at once) count as due.
        due_by = now if overdue else 0.0
        lost = () if overdue else lost[:LOST_PER_PASS]
        query = ("SELECT f.seq, f.face_id, f.topic, p.payload, f.content_type, f.properties, f.attempts "
                 "FROM faces f JOIN payloads p ON p.seq = f.seq WHERE f.next_attempt <= ? ")
        if lost:
            query += f"OR (f.next_attempt <= ? AND f.face_id IN ({','.join('?' * len(lost))})) "
        with self._conn:
            self._conn.execute("BEGIN IMMEDIATE")
            # No schedule lies further ahead than the longest delay, unless the clock was set back since it
            # was made; without this, a step back of a day would hold those faces back a day.
            self._conn.execute("UPDATE faces SET next_attempt = ? WHERE next_attempt > ?", (ceiling, ceiling))
            rows = self._conn.execute(query + "ORDER BY f.next_attempt, f.seq LIMIT ?",
                                      (due_by, *((now, *lost) if lost else ()), limit)).fetchall()
            self._conn.executemany(
                "UPDATE faces SET attempts = ?, next_attempt = ? WHERE seq = ?",
                [(row[6] + 1, now + self.settings.redeliver_delay(row[6] + 1), row[0]) for row in rows])
        return [PendingFace(row[1], row[2], bytes(row[3]), row[4],
                            tuple((str(k), str(v)) for k, v in json.loads(row[5])), row[6] + 1) for row in rows]

    def resume(self) -> int:
        """Make every pending face due now (at start: whatever the edge broker held may be gone); returns how
        many are pending. Faces already due are not written again (a crash loop would rewrite them all)."""
        with self._lock, self._conn:
            self._conn.execute("UPDATE faces SET next_attempt = 0 WHERE next_attempt != 0")
            return self._count

    def due_now(self, face_ids: Sequence[str]) -> None:
        """Faces committed but not published (the sender's in-memory queue was full): the next redelivery
        pass takes them first, as their first attempt."""
        with self._lock, self._conn:
            self._conn.executemany("UPDATE faces SET attempts = 0, next_attempt = 0 WHERE face_id = ?",
                                   [(face_id,) for face_id in face_ids])

    def counts(self) -> OutboxCounts:
        with self._lock:
            return OutboxCounts(self._count, self._bytes, self._counters["delivered"], self._counters["evicted"],
                                self._counters["refused"])

    @property
    def full(self) -> bool:
        return self._full_since is not None

    def close(self) -> None:
        with self._lock:
            self._conn.close()
            self._owner.close()


def _copy_rows(conn: sqlite3.Connection, rows: Sequence[tuple[object, ...]]) -> None:
    """Put faces read from a damaged outbox into a fresh one, each due at once (one transaction)."""
    with conn:
        conn.execute("BEGIN IMMEDIATE")
        for row in rows:
            cursor = conn.execute(
                "INSERT OR IGNORE INTO faces (face_id, topic, content_type, properties, captured_at, "
                "committed_at, bytes, attempts, next_attempt) VALUES (?, ?, ?, ?, ?, ?, ?, 0, 0)",
                row[:-1])
            if cursor.rowcount:  # a damaged index can list a face twice
                conn.execute("INSERT INTO payloads (seq, payload) VALUES (?, ?)", (cursor.lastrowid, row[-1]))
