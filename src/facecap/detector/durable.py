"""Commits the detector's faces to the outbox off the capture thread, then lets the outbox publish them.

A synced commit takes 12-23 ms at p99 on an eMMC or SD card, longer than a frame, so the capture loop
only queues the face here (bounded by the publisher's byte budget) and a committer thread writes what
has gathered in one transaction: one sync per batch rather than per face. A face is published only once
its commit returned, and counted as captured (`committed`) only then.
"""

from __future__ import annotations

import errno
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from ..contract import OutgoingFace
from ..errors import ConfigError
from ..mqtt import MqttClient
from ..outbox import Outbox, OutboxPublisher, OutboxSettings, OutboxWriteError
from ..outbox.schema import OutboxBusyError

log = logging.getLogger(__name__)

# Faces per synced transaction at most: a burst is committed in a few syncs, yet one commit never holds
# the outbox's lock for long.
_BATCH = 64


@dataclass
class CommitStats:
    committed: int = 0  # on disk, then handed to the outbox's sender
    refused: int = 0  # the outbox was full and its policy is refuse-newest (the outbox counts it too)


class OutboxCommitter:
    """A queue in front of OutboxPublisher.capture with a thread of its own. `on_done(size)` is called
    for every face once its commit is over (accepted or refused), so the caller can release its budget."""

    def __init__(self, outbox: OutboxPublisher, on_done: Callable[[int], None]) -> None:
        self.outbox = outbox
        self.stats = CommitStats()
        self._on_done = on_done
        self._queue: list[tuple[OutgoingFace, int]] = []
        self._cond = threading.Condition()
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="outbox-commit", daemon=True)
        self._thread.start()

    def put(self, face: OutgoingFace, size: int) -> None:
        with self._cond:
            self._queue.append((face, size))
            self._cond.notify()

    def close(self, timeout: float) -> bool:
        """Commit what is queued, then stop. False if that did not finish within `timeout`."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait()
                if not self._queue:
                    return
                batch, self._queue = self._queue[:_BATCH], self._queue[_BATCH:]
            self._commit(batch)

    def _commit(self, batch: list[tuple[OutgoingFace, int]]) -> None:
        # This thread is the only one capturing, so the change of `unsaved` is this batch's.
        unsaved_before = self.outbox.stats.unsaved
        try:
            accepted = self.outbox.capture([face for face, _ in batch])
        except Exception:  # a bug, not a full disk (capture handles that): keep the thread alive
            log.exception("committing %d faces to the outbox failed", len(batch))
            accepted = [False] * len(batch)
        taken = accepted.count(True)
        # Faces the disk refused went out without the outbox: accepted, but not on disk.
        self.stats.committed += taken - (self.outbox.stats.unsaved - unsaved_before)
        self.stats.refused += len(batch) - taken
        for _, size in batch:
            self._on_done(size)


# A disk that is full, read-only (ext4 remounts so after eMMC errors) or failing: no configuration is wrong.
_DISK_REFUSES = (errno.ENOSPC, errno.EROFS, errno.EIO, errno.EDQUOT)


def _without_outbox(reason: str) -> None:
    # Faces sent without the outbox beat a component that restarts until Greengrass gives up on it and
    # captures nothing. The faces in the file wait there for a start that can open it.
    log.error("%s; publishing without the outbox until the next start, so a power cut may lose faces", reason)


def open_outbox(settings: OutboxSettings, client: MqttClient, device_id: str) -> OutboxPublisher | None:
    """The outbox the configuration asks for, publishing through `client` (not started yet); None when
    `outbox.enabled` is false, or when the disk refuses to open it. Raises ConfigError when another process
    owns the folder."""
    if not settings.enabled:
        return None
    folder = settings.folder()
    try:
        outbox = Outbox(folder, settings)
    except OutboxBusyError as exc:
        raise ConfigError("detector", [("outbox.dir", str(exc))]) from None
    except OSError as exc:
        if exc.errno not in _DISK_REFUSES:  # a wrong path or permission: the configuration's to fix
            raise ConfigError("detector", [("outbox.dir", f"cannot use {folder}: {exc.strerror or exc}")]) from None
        _without_outbox(f"cannot use outbox folder {folder}: {exc.strerror or exc}")
        return None
    except OutboxWriteError as exc:
        _without_outbox(str(exc))
        return None
    log.info("outbox %s: %d faces pending, redelivery after %.0f s", outbox.path, outbox.counts().pending,
             settings.redeliver_after_seconds)
    return OutboxPublisher(outbox, client.settings, client.client_id, device_id, client=client)
