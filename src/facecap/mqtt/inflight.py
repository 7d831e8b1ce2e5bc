"""The in-flight window: how many publishes may await their PUBACK at once.

awscrt sets no TCP_NODELAY, so awaiting each PUBACK in turn costs ~44 ms a message (DESIGN.md); many
publishes must stay in flight. Bounding them keeps the client's memory bounded too.
"""

from __future__ import annotations

import threading


class InFlightWindow:
    """Up to `limit` slots. A publish takes one before it is sent and gives it back on its PUBACK (or
    failure). Once closed, no slot is handed out any more and every waiting caller is woken."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"an in-flight window needs at least one slot, not {limit}")
        self.limit = limit
        self._count = 0
        self._closed = False
        self._lock = threading.Lock()
        self._room = threading.Condition(self._lock)  # a slot came free, or the window closed
        self._empty = threading.Condition(self._lock)  # nothing is in flight any more

    @property
    def count(self) -> int:
        """Slots taken now."""
        return self._count

    def acquire(self, block: bool = True, timeout: float | None = None) -> bool:
        """Take a slot. Without block, or when timeout (None waits for ever) runs out, or when the
        window is or gets closed, return False instead."""
        with self._lock:
            if block:
                self._room.wait_for(lambda: self._closed or self._count < self.limit, timeout)
            if self._closed or self._count >= self.limit:
                return False
            self._count += 1
            return True

    def release(self) -> None:
        """Give a slot back (also after close: publishes sent before it still complete)."""
        with self._lock:
            if self._count == 0:
                raise RuntimeError("in-flight window released more often than acquired")
            self._count -= 1
            self._room.notify()
            if self._count == 0:
                self._empty.notify_all()

    def wait_empty(self, timeout: float) -> bool:
        """Wait up to timeout until no slot is taken; False if some still were when it ran out."""
        with self._lock:
            return self._empty.wait_for(lambda: self._count == 0, timeout)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._room.notify_all()
