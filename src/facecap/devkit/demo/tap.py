"""A plain subscriber on the edge broker: which faces were published, and when (the demo's and the end-to-end
tests' ground truth)."""

from __future__ import annotations

import os
import threading
from datetime import datetime

from ...contract import parse_message
from ...errors import ContractError
from ...mqtt import MqttClient, MqttSettings, ReceivedMessage


class Tap:
    """Watches `faces/#` on the edge broker (`settings`, e.g. LocalPipeline.edge_settings()): every face id
    published (with its capture time), the messages seen (a face sent again counts again) and the messages
    that broke the contract."""

    def __init__(self, settings: MqttSettings, client_id: str = "") -> None:
        self.face_ids: dict[str, datetime | None] = {}
        self.seen = 0
        self.invalid = 0
        self._lock = threading.Lock()
        self.client = MqttClient(settings, client_id or f"demo-tap-{os.getpid()}",
                                 on_message=self._on_message)

    def start(self) -> None:
        self.client.start()
        self.client.subscribe("faces/#")

    def _on_message(self, message: ReceivedMessage) -> None:
        try:
            face = parse_message(message.topic, message.payload, message.content_type, message.user_properties)
        except ContractError:
            with self._lock:
                self.invalid += 1
            return
        with self._lock:
            self.seen += 1
            self.face_ids[face.face_id] = face.captured_at

    def count(self) -> int:
        with self._lock:
            return len(self.face_ids)

    def ids(self) -> set[str]:
        with self._lock:
            return set(self.face_ids)
