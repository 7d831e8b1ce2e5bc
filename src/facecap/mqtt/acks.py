"""Manual-ack accounting: how many QoS 1 messages this client holds unacknowledged on its connection.

A broker must not send more unacknowledged QoS 1 messages than the receive maximum a client asked for;
that bound is what keeps a slow consumer's memory flat. Mosquitto before 2.0.13 breaks it (each PUBACK
of the oldest message lets a whole receive maximum more through, fixed by "Various fixes around
inflight quota management", #2306). Nothing here can refuse the messages, so the overrun is said once
per connection: memory then grows with the broker's backlog.
"""

from __future__ import annotations

import logging
import threading

log = logging.getLogger(__name__)


class AckLedger:
    """Counts messages received with an acknowledgement handle until they are acknowledged.

    Each connection is numbered; the broker counts afresh on a new connection (and redelivers what
    was not acknowledged), so an ack of a message from an earlier connection does not count."""

    def __init__(self, receive_maximum: int | None) -> None:
        self.receive_maximum = receive_maximum
        self._connection = 0
        self._unacked = 0
        self._peak = 0
        self._overrun_reported = False
        self._lock = threading.Lock()

    @property
    def connection(self) -> int:
        """The number of the current connection (0 before the first)."""
        return self._connection

    @property
    def unacked(self) -> int:
        return self._unacked

    @property
    def peak(self) -> int:
        """The most messages held unacknowledged at once on one connection. Above the receive maximum
        means the broker broke its promise."""
        return self._peak

    def new_connection(self) -> None:
        with self._lock:
            self._connection += 1
            self._unacked = 0
            self._overrun_reported = False

    def received(self) -> None:
        with self._lock:
            self._unacked += 1
            self._peak = max(self._peak, self._unacked)
            overrun = (self.receive_maximum is not None and self._unacked > self.receive_maximum
                       and not self._overrun_reported)
            if overrun:
                self._overrun_reported = True
        if overrun:
            log.warning("the broker sent more than %d unacknowledged messages, the receive maximum this client "
                        "asked for: the messages in hand, and their memory, now grow with the broker's backlog. "
                        "Mosquitto before 2.0.13 does this; run 2.0.13 or later for the cloud broker (the "
                        "compose file's eclipse-mosquitto:2.0 is)", self.receive_maximum)

    def acked(self, connection: int) -> None:
        """An ack of a message that came on `connection`."""
        with self._lock:
            if connection == self._connection:
                self._unacked = max(0, self._unacked - 1)
