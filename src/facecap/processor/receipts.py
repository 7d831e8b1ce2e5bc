"""The processor's side of receipts (contract v1.1): after a face is stored or quarantined, tell its device.

Finished face ids are batched per device and published within `receiptWindowSeconds` (200 ms by default),
QoS 1, one message per device and window, from one thread of their own, so a worker never waits for it.
A receipt is cheap to lose (the device publishes the face again and it lands on the same key), but not free:
each lost one costs a face's whole trip again. While the processor is disconnected a batch is dropped and
counted rather than queued (after a reconnect the bridge may not even have subscribed yet). While it is
connected, a batch waits for a free in-flight slot: after a regional power cut a hundred devices finish
faces in one window, more receipts than the client's in-flight publishes (`maxInFlight`), and dropping
the rest made 44 % of the processor's work duplicates (99 devices, audit rig, 2026-11-27).
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Protocol

from ..contract import check_id
from ..errors import ContractError
from ..mqtt import ReceivedMessage
from ..receipts import MAX_IDS_PER_RECEIPT, RECEIPT_CONTENT_TYPE, encode_receipt, is_receipt_id, receipt_topic
from .plan import Plan

log = logging.getLogger(__name__)

# How long one receipt waits for an in-flight slot of a connected client before it is dropped.
_SLOT_WAIT_SECONDS = 2.0


class ReceiptClient(Protocol):
    """The part of MqttClient used here."""

    @property
    def connected(self) -> bool: ...

    def publish(self, topic: str, payload: bytes, *, content_type: str | None = None,
                user_properties: Sequence[tuple[str, str]] | Mapping[str, str] = (), retain: bool = False,
                qos: int = 1, block: bool = True, timeout: float | None = None) -> Future[None] | None: ...


@dataclass
class ReceiptStats:
    sent: int = 0  # receipt messages handed to the client
    faces: int = 0  # face ids in them
    dropped: int = 0  # receipt messages dropped (disconnected, or no free slot in time)


def receipt_target(message: ReceivedMessage, plan: Plan, topic_prefix: str) -> tuple[str, str] | None:
    """(device id, face id) for a finished message, or None when it names no device or no usable id
    (e.g. a message on a malformed topic, quarantined for it)."""
    levels = message.topic.split("/")
    prefix = topic_prefix.split("/")
    if levels[: len(prefix)] != prefix or len(levels) <= len(prefix):
        return None
    try:
        device = check_id("device-id", levels[len(prefix)])
    except ContractError:
        return None
    face_id = plan.face_id or dict(message.user_properties).get("face-id", "")
    return (device, face_id) if is_receipt_id(face_id) else None


class ReceiptSender:
    def __init__(self, client: ReceiptClient, *, topic_prefix: str, window_seconds: float = 0.2) -> None:
        self.stats = ReceiptStats()
        self._client = client
        self._prefix = topic_prefix
        self._window = window_seconds
        self._lock = threading.Lock()
        self._batches: dict[str, dict[str, list[str]]] = defaultdict(lambda: {"stored": [], "quarantined": []})
        self._ready = threading.Event()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="receipts", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Send what is batched, then stop."""
        self._stopped.set()
        self._ready.set()
        if self._thread.is_alive():
            self._thread.join(5)

    def finished(self, message: ReceivedMessage, plan: Plan) -> None:
        if plan.quarantined and plan.reason == "rate":
            # Over the device's ceiling: kept in quarantine, but no receipt, so the device's outbox
            # publishes the face again later (paced) and it is then stored as a face.
            return
        target = receipt_target(message, plan, self._prefix)
        if target is None:
            return
        device, face_id = target
        with self._lock:
            self._batches[device]["quarantined" if plan.quarantined else "stored"].append(face_id)
        self._ready.set()

    def _run(self) -> None:
        while not self._stopped.is_set():
            self._ready.wait()
            # The first finished face opens the window; everything finished within it shares a message.
            self._stopped.wait(self._window)
            self._ready.clear()
            self._flush()
        self._flush()

    def _flush(self) -> None:
        with self._lock:
            batches, self._batches = self._batches, defaultdict(lambda: {"stored": [], "quarantined": []})
        for device, ids in batches.items():
            stored, quarantined = ids["stored"], ids["quarantined"]
            for start in range(0, len(stored) + len(quarantined), MAX_IDS_PER_RECEIPT):
                self._send(device, _window(stored, start), _window(quarantined, start - len(stored)))

    def _send(self, device: str, stored: list[str], quarantined: list[str]) -> None:
        future = None
        if self._client.connected:
            # This thread is the receipts' own, so it may wait for a slot; faces finished meanwhile join the
            # next window. A broker that acknowledges nothing for this long is treated as gone.
            future = self._client.publish(receipt_topic(device), encode_receipt(stored, quarantined),
                                          content_type=RECEIPT_CONTENT_TYPE, timeout=_SLOT_WAIT_SECONDS)
        if future is None:
            self.stats.dropped += 1
            log.debug("receipt for %d faces of %s dropped (not connected, or no in-flight slot within %g s); "
                      "the device publishes them again", len(stored) + len(quarantined), device,
                      _SLOT_WAIT_SECONDS)
            return
        self.stats.sent += 1
        self.stats.faces += len(stored) + len(quarantined)


def _window(ids: list[str], start: int) -> list[str]:
    """ids[start:start + MAX_IDS_PER_RECEIPT], for a start that may be negative (the part before 0 is
    another list's)."""
    low = max(0, start)
    high = max(0, start + MAX_IDS_PER_RECEIPT)
    return ids[low:high]
