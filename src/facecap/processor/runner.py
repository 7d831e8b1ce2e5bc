"""The processor: MQTT in, store out, acknowledge only after the store succeeded.

Threads: with the awscrt S3 store (the default) the MQTT client and the S3 client share one awscrt
event-loop thread, and a face never leaves it: the message callback plans the face and starts its put,
the put's answer PUBACKs it. At most `workers` faces are in the store at once; the rest of the receive
window waits in arrival order (slots.py). With a blocking store (file://, boto3), `workers` dispatcher
threads take the messages and put them one at a time. Either way a put that fails goes to `workers` retry
threads, which back off exponentially for as long as the store fails, then acknowledge. One copy of a face
is stored at a time: a copy that comes meanwhile (redelivered after a reconnect) waits with it, without its
payload (inhand.py). The broker's receive maximum bounds the QoS 1 messages in hand. A supervisor thread
keeps the subscription, the heartbeat and the periodic statistics.

Nothing is dropped: a message is acknowledged after its objects are stored, or never. A crash or a
shutdown that gives up leaves it unacknowledged in the broker's persistent session, which redelivers it,
and because the object key depends only on the message, the redelivery overwrites the same object.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..contract import parse_time
from ..mqtt import MqttClient, ReceivedMessage, StatusTopic
from ..storage import AsyncStore, Store, StoreError
from .config import DEFAULT_CLIENT_ID, ProcessorConfig
from .guard import DeviceGuard, QuarantineLog, clip
from .heartbeat import write_heartbeat
from .inhand import FacesInHand
from .plan import Plan, Put, plan_message, quarantine_plan
from .receipts import ReceiptSender
from .slots import Slots
from .stats import ProcessorStats

log = logging.getLogger(__name__)

_TICK_SECONDS = 0.5
# After the drain timeout, how long puts already given up may take to end.
_GIVE_UP_SECONDS = 2.0
_FAILURE_LOG_INTERVAL = 10.0


class FailureReporter:
    """Store failures come in bursts (one per retry per pending face): log the first, then a reminder
    at most every ten seconds, then the recovery, instead of one line per attempt."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._since: float | None = None
        self._last_log = 0.0
        self._count = 0

    @property
    def failing_since(self) -> float | None:
        return self._since

    def failed(self, error: Exception, key: str) -> None:
        now = time.monotonic()
        hint = "" if getattr(error, "transient", True) else " (check the bucket and the permissions)"
        with self._lock:
            self._count += 1
            if self._since is None:
                self._since = self._last_log = now
                log.warning("store failed%s; faces stay unacknowledged and are retried with backoff: %s: %s",
                            hint, key, error)
            elif now - self._last_log >= _FAILURE_LOG_INTERVAL:
                self._last_log = now
                log.warning("store still failing after %.0f s (%d failed attempts)%s: %s",
                            now - self._since, self._count, hint, error)

    def succeeded(self) -> None:
        if self._since is None:
            return
        with self._lock:
            if self._since is not None:
                log.info("store recovered after %.1f s and %d failed attempts",
                         time.monotonic() - self._since, self._count)
                self._since = None
                self._count = 0


@dataclass
class _Face:
    """A received message on its way: its plan, and the put that is next (or being) stored."""

    message: ReceivedMessage
    plan: Plan
    next_put: int = 0
    started: float = 0.0
    slot: bool = False  # holds one of the asynchronous store's slots

    @property
    def key(self) -> str:
        """The face's first object key: its copies share it (FacesInHand)."""
        return self.plan.puts[0].key


class ProcessorRunner:
    """The processor: its configuration, the store it writes to, and the MQTT client it reads from.

    `client` is for tests: an already built client (manual acknowledgement, persistent session) whose
    handler is this runner's `handle`; by default the client is built from the configuration."""

    def __init__(self, config: ProcessorConfig, store: Store, client: MqttClient | None = None) -> None:
        self.config = config
        self.store = store
        self.stats = ProcessorStats()
        self.guard = DeviceGuard(config.max_faces_per_second_per_device, config.topic_prefix,
                                 config.rate_burst_faces)
        self.quarantine_log = QuarantineLog(config.topic_prefix)
        self._failures = FailureReporter()
        self._pending = 0
        self._idle = threading.Condition()
        self._draining = threading.Event()  # stop taking new messages
        self._abandon = threading.Event()  # stop retrying; leave the rest unacknowledged
        self._stopped = threading.Event()
        self._subscribed = threading.Event()
        self._disconnected_since: float | None = time.monotonic()
        self._supervisor: threading.Thread | None = None
        # A store that puts asynchronously is driven from the MQTT event-loop thread, which is also the
        # store's when it offers its awscrt bootstrap: no thread hand-off at all on a face's way, which
        # took the processor from 1.6 to 1.1 ms of CPU per face in the pipeline (docs/benchmarks.md).
        # A blocking store is driven from `workers` dispatcher threads. Faces whose put failed wait out
        # their backoff on `workers` retry threads either way.
        self._async_store = store if isinstance(store, AsyncStore) else None
        self._slots: Slots[_Face] = Slots(config.workers)
        self._retries = ThreadPoolExecutor(config.workers, thread_name_prefix="processor-retry")
        self._in_hand = FacesInHand(lambda: self.client.acks.connection)
        self.client = client if client is not None else MqttClient(
            config.mqtt,
            DEFAULT_CLIENT_ID,
            persistent=True,
            status=StatusTopic(config.status_topic),
            on_message=self.handle,
            manual_ack=True,
            receive_maximum=config.receive_maximum,
            handler_threads=0 if self._async_store is not None else config.workers,
            bootstrap=getattr(self._async_store, "bootstrap", None),
        )
        self.receipts = ReceiptSender(self.client, topic_prefix=config.topic_prefix,
                                      window_seconds=config.receipt_window_seconds)

    # --- lifecycle ---------------------------------------------------------------------------------------

    def start(self) -> None:
        """Connect in the background (a broker that is down is retried with backoff) and subscribe as
        soon as connected."""
        log.info("processor %s: %s -> %s, %d workers", self.config.client_id, self.config.shown_topic_filter,
                 self.store.describe(), self.config.workers)
        self.client.start(wait=False)
        self.receipts.start()
        self._supervisor = threading.Thread(target=self._supervise, name="processor-supervisor", daemon=True)
        self._supervisor.start()

    def run(self, stop: threading.Event) -> int:
        """Run until `stop` is set, then drain. Whatever was left unfinished stays unacknowledged in the
        broker's session: nothing is lost, so a requested stop is a clean exit (0)."""
        self.start()
        while not stop.wait(1.0):
            pass
        self.stop()
        return 0

    def wait_ready(self, timeout: float) -> bool:
        """True once subscribed (tests and benchmarks wait for this before publishing)."""
        return self._subscribed.wait(timeout)

    @property
    def pending(self) -> int:
        """Faces in hand: received and not yet finished (in the store, waiting for a slot in it, or
        backing off to retry), and those a dispatcher thread has not taken yet."""
        return self._pending + self.client.waiting

    def stop(self, drain_timeout: float | None = None) -> bool:
        """Take no new messages, finish the ones being stored for up to drain_timeout, then disconnect.
        Returns True if each of those was stored and acknowledged. Messages received but not yet taken
        by a worker stay unacknowledged: the broker redelivers them to the next session."""
        timeout = self.config.drain_timeout_seconds if drain_timeout is None else drain_timeout
        self._draining.set()
        with self._idle:
            self._idle.wait_for(lambda: self._pending == 0, timeout)
            left = self._pending
        if left:
            log.warning("%d faces not stored after %.0f s; leaving them unacknowledged for the broker to "
                        "redeliver", left, timeout)
            self._abandon.set()
            for face in self._slots.drop_waiting():  # none will get a slot any more
                self._finish_face(face, "abandoned")
            # Retries stop at once, and puts in progress are cancelled: each fails, and a face that failed
            # now is left unacknowledged. A blocking store's put cannot be cancelled: it gets a moment to
            # end, not its whole timeout, since Docker kills the container a few seconds after the drain.
            if self._async_store is not None:
                self._async_store.cancel_started()
            with self._idle:
                if not self._idle.wait_for(lambda: self._pending == 0, _GIVE_UP_SECONDS):
                    log.warning("%d puts still running; stopping without them (their faces stay "
                                "unacknowledged)", self._pending)
        self._stopped.set()
        self._retries.shutdown(wait=False)  # idle: every face has finished or been given up
        if self._supervisor is not None:
            self._supervisor.join(5)
        self.receipts.stop()
        self.client.stop(timeout=5)
        Path(self.config.heartbeat_file).unlink(missing_ok=True)
        log.info("processor stopped: %s", self.stats.summary(self.pending))
        return left == 0

    # --- receiving ---------------------------------------------------------------------------------------

    def handle(self, message: ReceivedMessage) -> None:
        # The event-loop thread (an asynchronous store) or a dispatcher thread: plan, then start the
        # first put; the face is acknowledged when its last put succeeded (_stored).
        with self._idle:
            self._pending += 1
        self.stats.count("received")
        try:
            if self._draining.is_set():
                self._finish(message, "abandoned")  # unacknowledged: the broker redelivers it next session
                return
            verdict = self.guard.screen(message)
            if verdict == "retained":
                self.client.ack(message)
                self._finish(message, "ignored")
                return
            plan = self._plan(message, verdict)
            if plan.quarantined:
                self.quarantine_log.note(message.topic, plan.reason, plan.detail)
        except Exception:  # noqa: BLE001 - a bug: _failed logs it and leaves the message unacknowledged
            self._failed(message)
            return
        self._store_or_hold(_Face(message, plan))

    def _store_or_hold(self, face: _Face) -> None:
        first, dropped = self._in_hand.claim(face.key, face.message)
        for message in dropped:
            self._finish(message, "superseded")
        if not first:
            return  # held, without its payload, until the copy in hand is stored
        try:
            self._begin_storing(face)
        except Exception:  # noqa: BLE001 - a bug: _failed logs it and leaves the message unacknowledged
            self._failed(face.message, face)

    def _begin_storing(self, face: _Face) -> None:
        if self._async_store is not None:
            if not self._slots.take(face):
                return  # it starts when a face before it gives its slot back (_release_slot)
            face.slot = True
        self._start_put(face)

    def _start_put(self, face: _Face) -> None:
        put = face.plan.puts[face.next_put]
        face.started = time.monotonic()
        if self._async_store is None:
            self._stored(face, self._put_now(put))
            return
        try:
            self._async_store.start_put(put.key, put.body, put.content_type, put.metadata,
                                        lambda error: self._stored(face, error))
        except Exception:  # noqa: BLE001 - a bug: _failed logs it and leaves the message unacknowledged
            self._failed(face.message, face)

    def _stored(self, face: _Face, error: StoreError | None) -> None:
        # Where a put ended: the store's thread (asynchronous) or the worker's. A failure goes to the
        # retry threads, which back off without holding this thread or the face's slot.
        try:
            if error is not None:
                self._put_failed(face.plan.puts[face.next_put], error)
                self._release_slot(face)
                self._retries.submit(self._retry, face)
                return
            self.stats.store_latency(time.monotonic() - face.started)
            self._failures.succeeded()
            face.next_put += 1
            if face.next_put < len(face.plan.puts):
                self._start_put(face)
                return
            self._release_slot(face)
            self._acknowledge(face)
        except Exception:  # noqa: BLE001 - a bug: _failed logs it and leaves the message unacknowledged
            self._failed(face.message, face)

    def _release_slot(self, face: _Face) -> None:
        if not face.slot:
            return
        face.slot = False
        waiting = self._slots.release()
        if waiting is not None:
            waiting.slot = True
            self._start_put(waiting)

    def _retry(self, face: _Face) -> None:
        """On a retry thread: the put that failed and the rest, with backoff, then acknowledge."""
        try:
            stored = all(self._put_with_retry(face.plan.puts[index], failed=index == face.next_put)
                         for index in range(face.next_put, len(face.plan.puts)))
        except Exception:  # noqa: BLE001 - a bug: _failed logs it and leaves the message unacknowledged
            self._failed(face.message, face)
            return
        if stored:
            self._acknowledge(face)
        else:
            self._finish_face(face, "abandoned")

    def _acknowledge(self, face: _Face) -> None:
        """The face is stored: PUBACK it and every copy held with it. Never raises: each message is
        finished exactly once, whatever fails."""
        for index, message in enumerate([face.message, *self._in_hand.release(face.key)]):
            try:
                self.client.ack(message)
                self.stats.finished(face.plan.quarantined, copy=index > 0)
                if index == 0:  # one receipt and one log line per face, not per copy
                    self.receipts.finished(face.message, face.plan)
                    if not face.plan.quarantined and log.isEnabledFor(logging.DEBUG):
                        _log_stored(face.plan.puts)
            except Exception:
                log.exception("failed to acknowledge a message on %s", clip(message.topic))
            self._finish(message, None)

    def _failed(self, message: ReceivedMessage, face: _Face | None = None) -> None:
        # A bug, not bad input (bad input is quarantined): keep the process alive, and leave the message
        # (and the copies held with its face) unacknowledged so it is not lost.
        log.exception("failed to process a message on %s; left unacknowledged", clip(message.topic))
        if face is None:
            self._finish(message, None)
            return
        self._finish_face(face, None)
        self._release_slot(face)

    def _finish_face(self, face: _Face, outcome: str | None) -> None:
        """The face leaves the processor's hands unacknowledged, and so do the copies held with it."""
        for message in [face.message, *self._in_hand.release(face.key)]:
            self._finish(message, outcome)

    def _finish(self, message: ReceivedMessage, outcome: str | None) -> None:
        if outcome is not None:
            self.stats.count(outcome)
        with self._idle:
            self._pending -= 1
            if self._pending == 0:
                self._idle.notify_all()

    def _plan(self, message: ReceivedMessage, verdict: str) -> Plan:
        received_at = datetime.now(timezone.utc)
        if verdict == "rate":
            return quarantine_plan(message, "rate", "over the device's ceiling of "
                                   f"{self.config.max_faces_per_second_per_device:g} faces/s",
                                   self.config.quarantine_prefix, received_at)
        plan = plan_message(message, topic_prefix=self.config.topic_prefix,
                            max_payload_bytes=self.config.max_payload_bytes,
                            quarantine_prefix=self.config.quarantine_prefix, received_at=received_at)
        self.guard.check_clock(message.topic, plan.captured_at, received_at)
        return plan

    def _put_now(self, put: Put) -> StoreError | None:
        """A blocking put: None, or what went wrong as a StoreError."""
        try:
            self.store.put(put.key, put.body, put.content_type, put.metadata)
        except Exception as exc:  # noqa: BLE001 - whatever a store raises, the face waits and retries
            return exc if isinstance(exc, StoreError) else StoreError(repr(exc))
        return None

    def _put_failed(self, put: Put, error: StoreError) -> None:
        self.stats.count("store_failures")
        self._failures.failed(error, put.key)

    def _put_with_retry(self, put: Put, failed: bool) -> bool:
        """Store until it works (after a backoff first if it has `failed` already). False only when
        shutdown gave up on it. A face that came on an earlier connection is stored too, although its ack
        no longer counts: the broker may have lost it (a crash between two autosaves), so this copy may be
        the only one."""
        delay = self.config.retry.initial_delay_seconds
        while True:
            if failed:
                jitter = random.uniform(0.8, 1.2)  # noqa: S311 - spreads retries, not security
                if self._abandon.wait(delay * jitter):
                    return False
                delay = min(delay * 2, self.config.retry.max_delay_seconds)
            started = time.monotonic()
            error = self._put_now(put)
            if error is not None:
                self._put_failed(put, error)
                failed = True
                continue
            self.stats.store_latency(time.monotonic() - started)
            self._failures.succeeded()
            return True

    # --- supervision -------------------------------------------------------------------------------------

    def _supervise(self) -> None:
        next_heartbeat = next_stats = time.monotonic()
        next_stats += self.config.stats_interval_seconds
        subscribe_delay, next_subscribe = 0.5, 0.0
        while not self._stopped.wait(_TICK_SECONDS if self._subscribed.is_set() else 0.05):
            now = time.monotonic()
            connected = self.client.connected
            if connected:
                self._disconnected_since = None
            elif self._disconnected_since is None:
                self._disconnected_since = time.monotonic()
            if connected and not self._subscribed.is_set() and now >= next_subscribe:
                if self._subscribe():
                    subscribe_delay = 0.5
                else:
                    next_subscribe = now + subscribe_delay
                    subscribe_delay = min(subscribe_delay * 2, 30.0)
            if now >= next_heartbeat:
                next_heartbeat = now + self.config.heartbeat_interval_seconds
                self._write_heartbeat(connected)
            if now >= next_stats:
                next_stats = now + self.config.stats_interval_seconds
                log.info("%s", self.stats.summary(self.pending))
                log.info("%s", self.guard.summary())

    def _subscribe(self) -> bool:
        try:
            self.client.subscribe(self.config.topic_filter, qos=1)
        except Exception as exc:  # noqa: BLE001 - refused or timed out: retried with backoff
            log.warning("subscribing to %s failed, will retry: %s", self.config.shown_topic_filter, exc)
            return False
        log.info("subscribed to %s", self.config.shown_topic_filter)
        # From now on the MQTT client restores the subscription itself when a session is lost.
        self._subscribed.set()
        return True

    def _write_heartbeat(self, connected: bool) -> None:
        state: dict[str, Any] = {
            "connected": connected,
            "subscribed": self._subscribed.is_set(),
            "disconnectedFor": (None if self._disconnected_since is None
                                else time.monotonic() - self._disconnected_since),
            "storeFailingFor": (None if self._failures.failing_since is None
                                else time.monotonic() - self._failures.failing_since),
            "received": self.stats.received,
            "stored": self.stats.stored,
            "quarantined": self.stats.quarantined,
            "copiesAcknowledged": self.stats.copies,
            "copiesDropped": self.stats.superseded,
            "pending": self.pending,
            "receiptsSent": self.receipts.stats.sent,
            "receiptsDropped": self.receipts.stats.dropped,
        }
        try:
            write_heartbeat(Path(self.config.heartbeat_file), state)
        except OSError as exc:
            log.warning("cannot write heartbeat %s: %s", self.config.heartbeat_file, exc)


def _log_stored(puts: tuple[Put, ...]) -> None:
    """One line per stored face with its capture-to-store latency (DEBUG: the pipeline benchmark reads it)."""
    now = datetime.now(timezone.utc)
    for put in puts:
        captured = put.metadata.get("captured-at")
        latency = f"{(now - parse_time(captured)).total_seconds() * 1000:.1f}" if captured else "n/a"
        log.debug("stored %s face-id=%s capture_to_store_ms=%s", put.key, put.metadata.get("face-id", ""), latency)
