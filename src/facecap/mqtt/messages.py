"""The plain values the MQTT client hands out and takes in."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ReceivedMessage:
    topic: str
    payload: bytes
    content_type: str | None
    user_properties: tuple[tuple[str, str], ...]
    qos: int
    retain: bool
    received_at: float = field(default_factory=time.monotonic)
    ack_handle: Any = None  # set in manual-ack mode for QoS 1; pass the message to MqttClient.ack()
    connection: int = 0  # which connection of the client brought it (an ack only counts on that one)


@dataclass(frozen=True)
class StatusTopic:
    """A retained availability topic: `online` while connected, `offline` as last will and at stop."""

    topic: str
    online: bytes = b"online"
    offline: bytes = b"offline"
