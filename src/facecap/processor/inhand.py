"""The faces in hand, by object key: one copy of a face is stored at a time.

The broker sends every unacknowledged face again after a reconnect, and a device publishes a face again
when its receipt is late. While one copy of a face is being stored, or waits out a store failure, a later
copy is held without its payload and acknowledged when that one is stored: both would write the same
object. Before, each copy was stored on its own, so during an S3 outage every reconnect added a receive
window of faces in hand, payloads and all (111 reconnects: 6 323 faces and 141 MB, soak audit 2026-11-27).

An ack counts only on the connection that brought the message, so the copies held are those of the live
connection; older ones are dropped (the broker sends them again on the live one). The copy being stored is
kept whatever its connection: a broker that crashed between two autosaves may have lost the face, so that
copy may be the only one.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import replace

from ..mqtt import ReceivedMessage


class FacesInHand:
    def __init__(self, live_connection: Callable[[], int]) -> None:
        self._live_connection = live_connection
        self._held: dict[str, list[ReceivedMessage]] = {}  # object key -> copies held (no payload)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._held)

    def claim(self, key: str, message: ReceivedMessage) -> tuple[bool, list[ReceivedMessage]]:
        """(True, []): no copy of this face is in hand, so `message` is the one to store; call `release`
        once it is done with, whatever the outcome. (False, dropped): another copy is being stored and
        `message` is held with it, unless it came on a connection that is no longer live. `dropped` are the
        copies, this one included, whose ack no longer counts: the caller finishes them unacknowledged."""
        with self._lock:
            held = self._held.get(key)
            if held is None:
                self._held[key] = []
                return True, []
            live = self._live_connection()
            dropped = [copy for copy in held if copy.connection != live]
            held[:] = [copy for copy in held if copy.connection == live]
            if message.connection == live:
                held.append(replace(message, payload=b""))
            else:
                dropped.append(message)
            return False, dropped

    def release(self, key: str) -> list[ReceivedMessage]:
        """The copy being stored is done with (stored, given up, or failed): the copies held with it, to be
        finished the same way. A later copy is stored on its own again."""
        with self._lock:
            return self._held.pop(key, [])
