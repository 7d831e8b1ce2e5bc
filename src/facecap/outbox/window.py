"""The outbox's send window: how many faces may be published and not yet confirmed by a receipt.

The edge broker acknowledges a publish as soon as it has the face in memory, long before the bridge has
passed it on, so acknowledgements alone never slow a producer down: a slow or dead uplink (or a burst)
would pile faces up in the broker's RAM, up to its queue limit. The receipt is the end-to-end answer, so
bounding the faces that wait for one bounds what the edge broker holds for this producer; the rest wait
in the outbox, on disk, where a power cut does not take them.

A receipt can be lost (the processor drops them while disconnected), so a face leaves the window on its
own once it has waited `expire_after` seconds, but only while the bridge may be up: then the redelivery
timer publishes it again anyway. While receipts keep coming (outbox/flow.py) only faces presumed lost
leave: those overtaken, that is sent `overtaken_after` seconds or more before a face that has since been
confirmed. Faces travel the bridge in order, so such a face is not on its way; the others probably are.
While the bridge is known to be down nothing expires, and nothing more goes out to wait in the broker.
Where no bridge state has been seen at all (a broker without a bridge, which may never send receipts),
the publisher does not wait for room.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable

# Faces are confirmed a little out of order (the processor's workers, its 0.2 s receipt batches, a store
# retry), so a face counts as overtaken only by one sent this much later (or expire_after, if shorter).
OVERTAKEN_SECONDS = 10.0
# Faces presumed lost that one redelivery pass looks up by id, oldest first (SQLite allows 32 766
# parameters); the window remembers this many or four windows' worth, whichever is more, and the rest go in
# the next passes.
LOST_PER_PASS = 1000


class SendWindow:
    def __init__(self, size: int, expire_after: float) -> None:
        self.size = size
        self.expire_after = expire_after
        self.overtaken_after = min(expire_after, OVERTAKEN_SECONDS)
        self._sent: OrderedDict[str, float] = OrderedDict()  # face id -> last publish, oldest first
        # Faces a later face overtook, oldest first: kept after they leave the window until they are
        # published again or confirmed, so the redelivery passes know them.
        self._lost: OrderedDict[str, None] = OrderedDict()
        self._lost_cap = max(LOST_PER_PASS, 4 * size)
        self._room = threading.Condition()

    def __len__(self) -> int:
        with self._room:
            return len(self._sent)

    @property
    def full(self) -> bool:
        with self._room:
            return len(self._sent) >= self.size

    def presumed_lost(self) -> list[str]:
        """Faces a later face overtook: their receipt is lost, not on its way."""
        with self._room:
            return list(self._lost)

    def forget_overdue(self) -> None:
        """Let faces whose receipt is overdue leave now (for a sender that does not wait for room)."""
        with self._room:
            self._expire(time.monotonic(), lost_only=False)

    def wait_for_room(self, stop: threading.Event, may_expire: Callable[[], bool], tick: float,
                      held: Callable[[], bool] = lambda: False) -> bool:
        """Block until a face may be published; False when `stop` is set first. While `held()` (receipts
        keep coming) only overdue faces presumed lost leave."""
        with self._room:
            while not stop.is_set():
                if may_expire():
                    self._expire(time.monotonic(), lost_only=held())
                if len(self._sent) < self.size:
                    return True
                self._room.wait(tick)
            return False

    def sent(self, face_id: str) -> None:
        """A face was handed to the client (again: it moves to the back, with a fresh time)."""
        with self._room:
            self._sent[face_id] = time.monotonic()
            self._sent.move_to_end(face_id)
            self._lost.pop(face_id, None)

    def confirmed(self, face_ids: Iterable[str]) -> None:
        """A receipt came (ids this window never held are ignored). Faces sent well before the newest face
        it confirms are presumed lost."""
        with self._room:
            newest: float | None = None
            for face_id in face_ids:
                sent_at = self._sent.pop(face_id, None)
                self._lost.pop(face_id, None)
                if sent_at is not None and (newest is None or sent_at > newest):
                    newest = sent_at
            if newest is not None:
                for face_id, sent_at in self._sent.items():  # oldest first
                    if sent_at > newest - self.overtaken_after:
                        break
                    self._lost[face_id] = None
                while len(self._lost) > self._lost_cap:
                    self._lost.popitem(last=False)
            self._room.notify_all()

    def wake(self) -> None:
        """Look again (e.g. the bridge came up, so faces may expire)."""
        with self._room:
            self._room.notify_all()

    def _expire(self, now: float, lost_only: bool) -> None:
        # Runs before every publish: it stops at the first face not yet overdue, without copying the window.
        gone = []
        for face_id, sent_at in self._sent.items():  # oldest first
            if now - sent_at < self.expire_after:
                break
            if lost_only and face_id not in self._lost:
                continue  # on its way: its receipt is probably behind the ones coming now
            gone.append(face_id)
        for face_id in gone:
            del self._sent[face_id]  # a face presumed lost stays in _lost until it is published again
