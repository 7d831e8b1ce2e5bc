"""A bound on the faces an asynchronous store holds at once, with the rest waiting in arrival order.

Worker threads bound a blocking store by their number; a store that puts asynchronously needs the bound
said explicitly, or every face in the receive window would be in the S3 client at once (memory, and a
burst of connections).
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass
class Slots(Generic[T]):
    limit: int
    _busy: int = 0
    _waiting: deque[T] = field(default_factory=deque)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        if self.limit < 1:
            raise ValueError(f"slots need a limit of at least 1, not {self.limit}")

    @property
    def busy(self) -> int:
        return self._busy

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def take(self, item: T) -> bool:
        """True if `item` has a slot now; otherwise it waits for one (see release)."""
        with self._lock:
            if self._busy < self.limit:
                self._busy += 1
                return True
            self._waiting.append(item)
            return False

    def release(self) -> T | None:
        """Give a slot back. Returns the waiting item that takes it over, if any: the caller starts it."""
        with self._lock:
            if self._waiting:
                return self._waiting.popleft()
            self._busy -= 1
            return None

    def drop_waiting(self) -> list[T]:
        """Take every waiting item out (at shutdown: they will never get a slot)."""
        with self._lock:
            dropped, self._waiting = list(self._waiting), deque()
            return dropped
