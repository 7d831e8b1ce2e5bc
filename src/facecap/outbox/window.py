"""The outbox's send window: how many faces may be published and not yet confirmed by a receipt.

The edge broker acknowledges a publish as soon as it has the face in memory, long before the bridge has
passed it on, so acknowledgements alone never slow a producer down: a slow or dead uplink (or a burst)
would pile faces up in the broker's RAM, up to its queue limit. The receipt is the end-to-end answer, so
bounding the faces that wait for one bounds what the edge broker holds for this producer; the rest wait
in the outbox, on disk, where a power cut does not take them.

A receipt can be lost (the processor drops them while disconnected), so a face leaves the window on its
own once it has waited `expire_after` seconds, but only while the bridge may be up: then the redelivery
timer publishes it again anyway. While the bridge is known to be down nothing expires, and nothing more
goes out to wait in the broker. Where no bridge state has been seen at all (a broker without a bridge,
which may never send receipts), the publisher does not wait for room.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable


class SendWindow:
    def __init__(self, size: int, expire_after: float) -> None:
        self.size = size
        self.expire_after = expire_after
        self._sent: OrderedDict[str, float] = OrderedDict()  # face id -> last publish, oldest first
        self._room = threading.Condition()

    def __len__(self) -> int:
        with self._room:
            return len(self._sent)

    @property
    def full(self) -> bool:
        with self._room:
            return len(self._sent) >= self.size

    def forget_overdue(self) -> None:
        """Let faces whose receipt is overdue leave now (for a sender that does not wait for room)."""
        with self._room:
            self._expire(time.monotonic())

    def wait_for_room(self, stop: threading.Event, may_expire: Callable[[], bool], tick: float) -> bool:
        """Block until a face may be published; False when `stop` is set first."""
        with self._room:
            while not stop.is_set():
                if may_expire():
                    self._expire(time.monotonic())
                if len(self._sent) < self.size:
                    return True
                self._room.wait(tick)
            return False

    def sent(self, face_id: str) -> None:
        """A face was handed to the client (again: it moves to the back, with a fresh time)."""
        with self._room:
            self._sent[face_id] = time.monotonic()
            self._sent.move_to_end(face_id)

    def confirmed(self, face_ids: Iterable[str]) -> None:
        """A receipt came (ids this window never held are ignored)."""
        with self._room:
            for face_id in face_ids:
                self._sent.pop(face_id, None)
            self._room.notify_all()

    def wake(self) -> None:
        """Look again (e.g. the bridge came up, so faces may expire)."""
        with self._room:
            self._room.notify_all()

    def _expire(self, now: float) -> None:
        while self._sent:
            face_id, sent_at = next(iter(self._sent.items()))
            if now - sent_at < self.expire_after:
                return
            del self._sent[face_id]
