"""When overdue faces should wait, because their receipts are probably on the way: the two holds.

`ReceiptFlow`: receipts are coming, so faces still on their way to the cloud are not taken for lost.
`BridgeUpHold`: the bridge just came back and is delivering what the edge broker queued meanwhile.
Both live in memory, in the publisher; the outbox is only told, per redelivery pass, whether overdue faces
may go (`take_due(overdue=...)`) and which are presumed lost (`redelivery_scope`).

On a slow uplink a face can wait in the edge broker's queue for longer than `redeliverAfterSeconds` while
the receipts of the faces ahead of it keep arriving. Publishing it again then only queues a second copy
behind the first: over a 256 kbit/s link with the bridge up throughout, 141 of 200 faces went out twice,
and with a steady producer the send window let another `maxUnconfirmed` faces into the edge broker every
`redeliverAfterSeconds`, whatever the link carried (audit, 2026-11-27). So while receipts come, overdue
faces wait; once none has come for `quiet` seconds the pipe has stalled (a processor down, receipts lost
with a bridge connection) and they go.

A face whose receipt was lost while the others keep coming (a receipt published while the bridge was
down, a face the cloud broker dropped from a full queue) is overtaken by later faces' receipts, and the
send window marks it presumed lost: it goes on its usual schedule while receipts come (not during a
bridge-up hold, which holds every overdue face). As a last resort, should
anything else keep a receipt from coming, a hold lasts at most `longest` seconds; overdue faces then go
for `quiet` seconds before the next hold.
"""

from __future__ import annotations

import threading
import time


def redelivery_scope(bridge_held: bool, receipts_held: bool) -> tuple[bool, bool]:
    """What one redelivery pass may take besides the faces made due at once: (every overdue face, the
    overdue faces presumed lost). A bridge-up hold holds them all: the queue the bridge is delivering may
    hold any of them. While receipts come only those presumed lost go: the others are on their way."""
    return not (bridge_held or receipts_held), receipts_held and not bridge_held


class ReceiptFlow:
    def __init__(self, quiet: float, longest: float) -> None:
        self.quiet = quiet
        self.longest = longest
        self._last: float | None = None  # when the last receipt came (monotonic)
        self._hold_began = 0.0
        self._lock = threading.Lock()

    def receipt(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            if self._last is None or now - self._last >= self.quiet:
                self._hold_began = now  # receipts come again after a stall: a new hold
            self._last = now

    def holding(self, now: float | None = None) -> bool:
        """True while overdue faces should wait: receipts are coming, and the hold is not past `longest`."""
        now = time.monotonic() if now is None else now
        with self._lock:
            if self._last is None or now - self._last >= self.quiet:
                return False
            held = now - self._hold_began
            if held >= self.longest + self.quiet:
                self._hold_began = now  # the overdue faces had their turn: hold again
                return True
            return held < self.longest


class BridgeUpHold:
    """After the bridge comes back it delivers what the edge broker queued while it was down, so the
    receipts of those faces are on the way: overdue faces wait `seconds` instead of going out twice.

    Kept in memory, not written to each face's schedule: after a long outage that would rewrite the whole
    backlog (about 500 bytes a face) and block new faces' commits meanwhile, at every bridge-up; a restart
    makes every face due anyway. A hold is not extended, and the next one starts only once as long again
    has passed since it ended: an uplink that comes back more often than `seconds` (a flapping link) would
    otherwise hold overdue faces back for as long as it flaps, and those whose receipt was lost would never
    go out again."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._until: float | None = None  # monotonic
        self._lock = threading.Lock()

    def begin(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            if self._until is not None and now < self._until + self.seconds:
                return
            self._until = now + self.seconds

    def holding(self, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        with self._lock:
            return self._until is not None and now < self._until
