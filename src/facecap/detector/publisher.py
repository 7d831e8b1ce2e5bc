"""Hand face messages to the MQTT client without ever blocking the capture loop.

Memory stays bounded while the broker is slow or away: the client holds at most mqtt.maxInFlight
publishes, and this class at most output.maxQueuedBytes of payload. Beyond either limit a face is
dropped on the spot and counted, which the stats line reports.

With an outbox (the default on a device), a face goes to the committer instead (detector/durable.py): it
is synced to disk off the capture thread, and the outbox's publisher sends it and keeps it until its
receipt. The byte budget then also covers faces waiting for their commit.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Protocol

from ..contract import FaceMetadata, build_message
from ..errors import ContractError
from ..logs import Throttle
from ..outbox import OutboxPublisher
from .durable import OutboxCommitter

log = logging.getLogger(__name__)

_FAILURE_LOG_SECONDS = 10.0


class Publisher(Protocol):
    """The part of facecap.mqtt.MqttClient used here (a protocol, so tests can pass a slow fake)."""

    def publish(self, topic: str, payload: bytes, *, content_type: str | None,
                user_properties: Sequence[tuple[str, str]] | Mapping[str, str], block: bool) -> Future[None] | None: ...


@dataclass
class PublishStats:
    submitted: int = 0
    published: int = 0  # acknowledged by the broker
    dropped: int = 0  # refused here: too many in flight, byte budget, or an unsendable crop
    failed: int = 0  # the broker or the connection failed the publish
    queued_bytes: int = 0


class FacePublisher:
    def __init__(self, client: Publisher, *, topic_prefix: str, max_payload_bytes: int, max_queued_bytes: int,
                 outbox: OutboxPublisher | None = None) -> None:
        self._client = client
        self._topic_prefix = topic_prefix
        self._max_payload_bytes = max_payload_bytes
        self._max_queued_bytes = max_queued_bytes
        self._lock = threading.Lock()
        self._drop_log = Throttle(_FAILURE_LOG_SECONDS)
        self._failure_log = Throttle(_FAILURE_LOG_SECONDS)
        self.stats = PublishStats()
        self.committer = None if outbox is None else OutboxCommitter(outbox, self._release)

    def set_limits(self, max_payload_bytes: int, max_queued_bytes: int) -> None:
        """New limits from a live configuration change; they apply from the next face on."""
        with self._lock:
            self._max_payload_bytes = max_payload_bytes
            self._max_queued_bytes = max_queued_bytes

    def submit(self, payload: bytes, meta: FaceMetadata) -> bool:
        """Queue one face; False (and counted as dropped) when it cannot be queued right now."""
        with self._lock:
            self.stats.submitted += 1
        try:
            message = build_message(payload, meta, topic_prefix=self._topic_prefix,
                                    max_payload_bytes=self._max_payload_bytes)
        except ContractError as exc:
            self._drop(f"unsendable crop: {exc}")
            return False
        size = len(message.payload)
        with self._lock:
            budget_full = self.stats.queued_bytes + size > self._max_queued_bytes
            if not budget_full:
                self.stats.queued_bytes += size
        if budget_full:
            self._drop(f"{self._max_queued_bytes} bytes already wait for the broker")
            return False
        if self.committer is not None:
            self.committer.put(message, size)
            return True
        future = self._client.publish(message.topic, message.payload, content_type=message.content_type,
                                      user_properties=message.user_properties, block=False)
        if future is None:
            with self._lock:
                self.stats.queued_bytes -= size
            self._drop("mqtt.maxInFlight publishes already wait for the broker")
            return False
        future.add_done_callback(lambda done: self._completed(done, size))
        return True

    def close(self, timeout: float) -> bool:
        """Commit the faces still queued for the outbox (nothing to do without one)."""
        return self.committer is None or self.committer.close(timeout)

    def _release(self, size: int) -> None:
        with self._lock:
            self.stats.queued_bytes -= size

    def _completed(self, future: Future[None], size: int) -> None:
        # Runs on an MQTT client thread: count and return.
        error = future.exception()
        with self._lock:
            self.stats.queued_bytes -= size
            if error is None:
                self.stats.published += 1
                return
            self.stats.failed += 1
            report = self._failure_log.due()
        if report:
            log.warning("publish failed (%d so far): %s", self.stats.failed, error)

    def _drop(self, reason: str) -> None:
        with self._lock:
            self.stats.dropped += 1
            report = self._drop_log.due()
        if report:
            log.warning("dropping faces (%d so far): %s", self.stats.dropped, reason)
