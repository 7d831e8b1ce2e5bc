"""Publishes faces from the outbox and deletes them when their receipts arrive.

A producer calls `capture()`: the faces are committed (synced) to the outbox first, then handed to a
sender thread that publishes them with many in flight. The MQTT client bounds the faces awaiting the
broker's PUBACK; the send window (`maxUnconfirmed`) bounds those awaiting their receipt, so the edge
broker never holds more than that many of this producer's faces in memory, and the rest wait in the
outbox on disk. The same thread
publishes faces whose receipt is overdue, while the bridge is up (or its state is unknown), and at start
every pending face once more: whatever the edge broker held may have died with it. Receipts arrive on
`facecap/<device-id>/receipts` and delete their faces.
"""

from __future__ import annotations

import collections
import logging
import sqlite3
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass

from ..contract import OutgoingFace
from ..errors import ContractError, FacecapError
from ..logs import Throttle
from ..mqtt import MqttClient, MqttSettings, ReceivedMessage, StatusTopic
from ..polling import wait_until
from ..receipts import parse_receipt, receipt_topic
from .bridge import BridgeState
from .flow import BridgeUpHold, ReceiptFlow, redelivery_scope
from .store import Outbox, OutboxWriteError, PendingFace
from .window import SendWindow

log = logging.getLogger(__name__)

_TICK_SECONDS = 0.5
_BATCH = 100
# Fresh faces wait in memory for the sender up to this many bytes; beyond it they stay on disk only and
# go out with the next redelivery pass, first in line.
_FRESH_BYTES = 32 * 1024 * 1024
_ERROR_LOG_SECONDS = 10.0
# A broker that refuses a face by its ACL refuses every face: a configuration that does not match it, which
# a deployment can bring (a deviceId or topicPrefix set on one component only), and no retry mends.
_REFUSAL_HINT = (" — the broker's ACL does not let this client write there. The EdgeBroker lets a producer write "
                 "only <its topicPrefix>/<its deviceId>/# (and only as the detector or sender user), facecap's cloud "
                 "broker only faces/<the certificate's CN>/#: the producer's deviceId and topicPrefix must match")
# A refusal stays until a deployment mends it: said at once, then at most this often.
_REFUSAL_LOG_SECONDS = 600.0
# After the outbox failed a redelivery pass (a full or failing disk), wait this long before the next.
_DUE_RETRY_SECONDS = 5.0


@dataclass
class PublisherStats:
    published: int = 0  # acknowledged by the broker (first publishes and redeliveries)
    republished: int = 0  # redeliveries handed to the client
    failed: int = 0
    receipts: int = 0
    bad_receipts: int = 0
    deferred: int = 0  # captured while the in-memory queue was full: left for the redelivery pass
    unsaved: int = 0  # published without the outbox, because committing failed (disk full or failing)
    lost: int = 0  # of those, dropped: neither on disk nor room in memory while the sender was held back
    outbox_errors: int = 0  # other reads and writes of the outbox that failed (the faces stay in it)


class OutboxPublisher:
    def __init__(self, outbox: Outbox, settings: MqttSettings, client_id: str, device_id: str, *,
                 status: StatusTopic | None = None, client: MqttClient | None = None) -> None:
        """`client`: a client the producer already built (not started yet); this publisher becomes its
        message handler. By default one is built from `settings`."""
        self.outbox = outbox
        self.stats = PublisherStats()
        self.receipt_topic = receipt_topic(device_id)
        self.bridge = BridgeState(outbox.settings.bridge_client_id or f"facecap-edge-{device_id}",
                                  on_up=self._bridge_up)
        if client is None:
            client = MqttClient(settings, client_id, status=status)
        client.on_message = self._on_message
        self.client = client
        self.window = SendWindow(outbox.settings.max_unconfirmed, outbox.settings.redeliver_after_seconds)
        self.flow = ReceiptFlow(outbox.settings.redeliver_after_seconds, outbox.settings.redeliver_max_seconds)
        self.bridge_hold = BridgeUpHold(outbox.settings.redeliver_after_seconds)
        self._fresh: collections.deque[OutgoingFace] = collections.deque()
        self._fresh_bytes = 0
        self._unsent = 0  # fresh faces not yet handed to the client
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._subscribed = threading.Event()
        self._resuming = True
        self._next_due_check = 0.0
        self._unsaved_log = Throttle(_ERROR_LOG_SECONDS)
        self._lost_log = Throttle(_ERROR_LOG_SECONDS)
        self._outbox_error_log = Throttle(_ERROR_LOG_SECONDS)
        self._bug_log = Throttle(_ERROR_LOG_SECONDS)
        self._refusal_log = Throttle(_REFUSAL_LOG_SECONDS)
        self._failure_log = Throttle(_ERROR_LOG_SECONDS)
        self._thread = threading.Thread(target=self._run, name="outbox-sender", daemon=True)

    # --- lifecycle ---------------------------------------------------------------------------------------

    def start(self, wait: bool = True) -> None:
        """Connect (with wait, raise if the broker cannot be reached), then subscribe to receipts and the
        bridge state and publish every pending face again."""
        try:
            pending = self.outbox.resume()
        except (sqlite3.Error, OutboxWriteError) as exc:  # the faces go out as their schedule falls due
            self._outbox_failed("making pending faces due at start", exc)
            pending = 0
        if pending:
            log.info("outbox %s: %d faces pending from an earlier run; publishing them again",
                     self.outbox.path, pending)
        self.client.start(wait=wait)
        self._thread.start()

    def wait_subscribed(self, timeout: float) -> bool:
        return self._subscribed.wait(timeout)

    def stop(self, timeout: float = 10.0) -> None:
        """Publish the fresh faces not yet handed to the client (a file source that ended) and wait for
        their PUBACKs, both within `timeout`, then stop. Faces still pending stay in the outbox for the next
        start. A full send window while the bridge is down ends the wait at once: no receipt can come to
        make room, and the faces are on disk."""
        deadline = time.monotonic() + timeout
        self._wake.set()
        wait_until(lambda: self._unsent == 0 or not self._thread.is_alive() or self._held_back(),
                   timeout, interval=0.02)
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(max(0.1, deadline - time.monotonic()))
        self.client.stop(max(0.1, deadline - time.monotonic()))

    def _held_back(self) -> bool:
        """The sender waits for receipts that cannot come: its window is full and the bridge is down."""
        return self.bridge.up is False and self.window.full

    def wait_drained(self, timeout: float) -> bool:
        """True once no face is pending (every one has its receipt, or was evicted)."""
        deadline = time.monotonic() + timeout
        while self.outbox.counts().pending > 0:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)
        return True

    # --- capture -----------------------------------------------------------------------------------------

    def capture(self, faces: Sequence[OutgoingFace]) -> list[bool]:
        """Commit the faces to the outbox (synced to disk), then queue them for publishing. Returns per
        face whether it was accepted (see Outbox.capture). Never waits for the broker."""
        on_disk = True
        try:
            accepted = self.outbox.capture(faces)
        except OutboxWriteError as exc:
            # Better sent without the outbox's guarantee than not at all (as before there was an outbox).
            self._unsaved(len(faces), exc)
            accepted = [True] * len(faces)
            on_disk = False
        deferred: list[str] = []
        with self._lock:
            for face, ok in zip(faces, accepted, strict=True):
                if not ok:
                    continue
                if self._fresh_bytes + len(face.payload) > _FRESH_BYTES:
                    deferred.append(face.face_id)
                    continue
                self._fresh.append(face)
                self._fresh_bytes += len(face.payload)
                self._unsent += 1
        if deferred and on_disk:
            self._defer(deferred)
        elif deferred:
            self._lose(len(deferred))
        self._wake.set()
        return accepted

    def _defer(self, face_ids: list[str]) -> None:
        """A burst beyond the in-memory queue (a full send window holds the sender back): these faces are
        on disk only, and the redelivery pass takes them first, at its pace, instead of after a whole
        redeliverAfterSeconds."""
        self.stats.deferred += len(face_ids)
        try:
            self.outbox.due_now(face_ids)
        except sqlite3.Error as exc:  # still in the outbox: they go out when their redelivery is due
            log.warning("cannot bring %d deferred faces forward in outbox %s: %s", len(face_ids),
                        self.outbox.path, exc)

    def _lose(self, count: int) -> None:
        """Faces the disk refused while the in-memory queue is full (the sender is held back): memory stays
        bounded, so they are dropped, counted and said so; nothing else would ever send them."""
        self.stats.lost += count
        if self._lost_log.due():
            log.error("outbox %s: the disk refuses faces and the sender is held back with %d bytes queued in "
                      "memory; %d faces dropped so far (free space on the disk)", self.outbox.path,
                      self._fresh_bytes, self.stats.lost)

    def _unsaved(self, count: int, error: Exception) -> None:
        self.stats.unsaved += count
        if self._unsaved_log.due():
            log.error("%s; publishing without the outbox, so a power cut may lose these faces (%d so far)",
                      error, self.stats.unsaved)

    def _outbox_failed(self, action: str, exc: Exception) -> None:
        """The outbox file failed us (a full or failing disk). The sender must go on with fresh faces, and
        the faces in the file are kept: log, at most every ten seconds."""
        self.stats.outbox_errors += 1
        if self._outbox_error_log.due():
            log.error("outbox %s failed %s (%d outbox errors so far); faces in it stay there: %s",
                      self.outbox.path, action, self.stats.outbox_errors, exc)

    def summary(self) -> str:
        counts = self.outbox.counts()
        bridge = {True: "up", False: "down", None: "unknown"}[self.bridge.up]
        return (f"outbox pending {counts.pending} ({counts.pending_bytes} bytes), delivered {counts.delivered}, "
                f"evicted {counts.evicted}, refused {counts.refused}, unsaved {self.stats.unsaved}, "
                f"lost {self.stats.lost}, republished {self.stats.republished}, not taken {self.stats.failed}, "
                f"awaiting receipt {len(self.window)}, "
                f"bridge {bridge}")

    # --- the sender thread -------------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._step()
            except Exception:  # a bug: this thread must outlive it, or nothing goes out until a restart
                if self._bug_log.due():
                    log.exception("the outbox sender failed; it goes on in a second")
                self._stop.wait(1.0)

    def _step(self) -> None:
        if not self._subscribed.is_set():
            self._subscribe()
            return
        if self._send_fresh() or self._send_due():
            return
        self._wake.wait(_TICK_SECONDS)
        self._wake.clear()

    def _subscribe(self) -> None:
        if not self.client.wait_connected(_TICK_SECONDS):
            return
        try:
            self.client.subscribe(self.receipt_topic, qos=1)
            self.client.subscribe(self.bridge.topic, qos=0)
        except (FacecapError, TimeoutError) as exc:
            log.warning("subscribing to receipts failed, will retry: %s", exc)
            self._stop.wait(1.0)
            return
        self._subscribed.set()

    def _send_fresh(self) -> bool:
        with self._lock:
            batch = list(self._fresh)
            self._fresh.clear()
            self._fresh_bytes = 0
        for face in batch:
            if not self._publish(face.face_id, face.topic, face.payload, face.content_type, face.user_properties):
                return True
            with self._lock:
                self._unsent -= 1
        return bool(batch)

    def _send_due(self) -> bool:
        # Looked up once a tick (not after every fresh face, which would cost a query each) unless the
        # last look found faces, or at start.
        now = time.monotonic()
        if now < self._next_due_check or not (self._resuming or self.bridge.allows_redelivery()):
            return False
        pace = self.outbox.settings.redeliver_max_per_second
        overdue, lost = redelivery_scope(self.bridge_hold.holding(), self.flow.holding())
        try:
            due: list[PendingFace] = self.outbox.take_due(
                min(_BATCH, max(1, int(pace))) if pace else _BATCH, overdue=overdue,
                lost=self.window.presumed_lost() if lost else ())
        except (sqlite3.Error, OutboxWriteError) as exc:
            self._outbox_failed("taking overdue faces", exc)
            self._next_due_check = now + _DUE_RETRY_SECONDS
            return False
        if not due:
            self._resuming = False
            self._next_due_check = now + _TICK_SECONDS
            return False
        self.stats.republished += len(due)
        for face in due:
            if not self._publish(face.face_id, face.topic, face.payload, face.content_type, face.user_properties):
                break
        if pace:
            # A backlog (a day of faces after an outage) goes out at this pace, fresh faces in between.
            self._next_due_check = now + len(due) / pace
        return True

    def _publish(self, face_id: str, topic: str, payload: bytes, content_type: str,
                 user_properties: Sequence[tuple[str, str]]) -> bool:
        """Hand one face to the client, waiting for room in the send window and then for a free in-flight
        slot. False when stopping."""
        if self.bridge.up is None:
            # No bridge state seen: a broker without a bridge may send no receipts at all, so never wait;
            # letting overdue faces go keeps the window bounded all the same.
            self.window.forget_overdue()
        elif not self.window.wait_for_room(self._stop, self.bridge.allows_redelivery, _TICK_SECONDS,
                                           held=self.flow.holding):
            return False
        self.window.sent(face_id)
        while not self._stop.is_set():
            future = self.client.publish(topic, payload, content_type=content_type,
                                         user_properties=user_properties, timeout=_TICK_SECONDS)
            if future is not None:
                future.add_done_callback(self._published)
                return True
        return False

    def _published(self, future: Future[None]) -> None:
        # An MQTT client thread: count, say why, and return.
        error = future.exception()
        if error is None:
            self.stats.published += 1
            return
        # The face stays in the outbox: the redelivery timer publishes it again.
        self.stats.failed += 1
        if self._stop.is_set():
            return  # publishes cut short by our own stop: nothing to mend
        text = f"a face was not taken ({self.stats.failed} so far; each stays in the outbox and is published again)"
        if "broker refused" in str(error):  # a PUBACK failure code: the broker will answer so again
            if self._refusal_log.due():
                log.error("%s: %s%s", text, error, _REFUSAL_HINT if "NOT_AUTHORIZED" in str(error) else "")
        elif self._failure_log.due():  # the connection: the client reconnects
            log.warning("%s: %s", text, error)

    # --- incoming: receipts and the bridge state (the client's dispatcher thread) -------------------------

    def _on_message(self, message: ReceivedMessage) -> None:
        if message.topic == self.bridge.topic:
            self.bridge.update(message.payload)
            return
        if message.topic != self.receipt_topic:
            return
        try:
            receipt = parse_receipt(message.payload)
        except ContractError as exc:
            self.stats.bad_receipts += 1
            log.warning("ignoring a bad receipt on %s: %s", message.topic, exc)
            return
        self.stats.receipts += 1
        self.flow.receipt()
        self.window.confirmed(receipt.face_ids)
        try:
            removed = self.outbox.delivered(receipt.face_ids)
        except (sqlite3.Error, OutboxWriteError) as exc:  # the faces go out again and earn a new receipt
            self._outbox_failed("deleting the faces of a receipt", exc)
            return
        log.debug("receipt for %d faces, %d were pending", len(receipt.face_ids), removed)

    def _bridge_up(self) -> None:
        # The bridge is delivering what the edge broker queued while it was down; receipts for those are
        # on the way, so overdue faces get a fresh delay instead of going out twice.
        self.bridge_hold.begin()
        self.window.wake()
