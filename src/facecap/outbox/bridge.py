"""Follows the edge broker's bridge state, so faces are published again only while the uplink is up.

Mosquitto keeps a retained "1" (connected) or "0" on `$SYS/broker/connection/<bridge client id>/state`.
Until that arrives (another broker, no bridge, a producer connected straight to the cloud) the state is
unknown and redelivery falls back to its timer alone.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


def bridge_state_topic(bridge_client_id: str) -> str:
    return f"$SYS/broker/connection/{bridge_client_id}/state"


class BridgeState:
    def __init__(self, bridge_client_id: str, on_up: Callable[[], None] | None = None) -> None:
        self.topic = bridge_state_topic(bridge_client_id)
        self._up: bool | None = None
        self._on_up = on_up
        self._lock = threading.Lock()

    @property
    def up(self) -> bool | None:
        """True or False as the broker last said; None while unknown."""
        return self._up

    def allows_redelivery(self) -> bool:
        return self._up is not False

    def update(self, payload: bytes) -> None:
        text = payload.decode(errors="replace").strip()
        if text not in ("0", "1"):
            log.warning("ignoring bridge state %r on %s", text[:20], self.topic)
            return
        with self._lock:
            before, self._up = self._up, text == "1"
        if before != self._up:
            log.info("bridge %s", "up" if self._up else "down")
            if self._up and before is False and self._on_up is not None:
                self._on_up()
