"""MqttClient: one awscrt MQTT 5 connection, wired to the window, the ack ledger and the dispatcher.

It keeps the behaviours we measured (DESIGN.md): metrics disabled and persistent sessions set up right
(options.py); subscriptions restored when the broker lost the session, which awscrt does not do; a
PUBACK with a failure code turned into an exception, which awscrt does not do either; user code run
on the dispatcher's threads, and on awscrt's event-loop thread only when the caller says it never blocks
(dispatch.py); one Python thread state kept for all the callbacks of an awscrt thread (threadstate.py);
many publishes in flight, bounded (inflight.py); acknowledge-after-work through
acquire_publish_acknowledgement_control (acks.py).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from awscrt import io, mqtt5

from ..errors import MqttAuthError, MqttConnectError, PublishError
from ..threadstate import keep_thread_state
from .acks import AckLedger
from .dispatch import Dispatcher, MessageHandler
from .inflight import InFlightWindow
from .local import check_local_paths
from .messages import ReceivedMessage, StatusTopic
from .options import client_options, status_packet
from .settings import MqttSettings

log = logging.getLogger(__name__)

_AUTH_FAILURES = {
    mqtt5.ConnectReasonCode.BAD_USERNAME_OR_PASSWORD,
    mqtt5.ConnectReasonCode.NOT_AUTHORIZED,
    mqtt5.ConnectReasonCode.CLIENT_IDENTIFIER_NOT_VALID,
    mqtt5.ConnectReasonCode.BANNED,
    mqtt5.ConnectReasonCode.BAD_AUTHENTICATION_METHOD,
}
# Failures that retrying cannot fix: the start() of a waiting caller gives up at once on them.
_FATAL_ERRORS = ("AWS_IO_TLS_ERROR_NEGOTIATION_FAILURE", "AWS_IO_FILE_VALIDATION_FAILURE")
_PUBACK_OK = {mqtt5.PubackReasonCode.SUCCESS, mqtt5.PubackReasonCode.NO_MATCHING_SUBSCRIBERS}
# At most this long for the offline status at stop (the last will says it too if it does not go out).
_STATUS_SECONDS = 2.0


@dataclass
class ClientStats:
    """Counters for logs, summaries and tests (written from awscrt threads; read them as a snapshot)."""

    published: int = 0
    publish_failed: int = 0  # refused by the broker (a PUBACK failure code) or failed in the client
    received: int = 0
    connects: int = 0  # the first connection and every reconnect
    connect_failures: int = 0
    acks: AckLedger = field(default_factory=lambda: AckLedger(None), repr=False)

    @property
    def unacked_peak(self) -> int:
        """Manual-ack mode: the most messages held unacknowledged at once on one connection."""
        return self.acks.peak


def puback_error(inner: Future[Any], topic: str) -> PublishError | None:
    """The error a completed awscrt publish stands for, or None when the broker took it. awscrt does not
    raise on a PUBACK with a failure reason code, so look at the code."""
    error = inner.exception()
    if error is not None:
        return PublishError(f"publish to {topic} failed: {error}")
    puback = inner.result().puback
    code = getattr(puback, "reason_code", None)
    if puback is not None and code not in _PUBACK_OK:
        reason = getattr(puback, "reason_string", None) or ""
        return PublishError(f"broker refused publish to {topic}: {getattr(code, 'name', code)} {reason}".rstrip())
    return None


class MqttClient:
    """A started-once MQTT 5 connection with bounded in-flight publishes and a dispatcher for messages.

    The message handler (`on_message`, given here or set before start()) runs on one dispatcher thread
    in arrival order; it must not block for long, since messages wait behind it. With handler_threads=N
    it runs on N threads at once, each taking the next message (a consumer's worker pool); with 0, on
    awscrt's event-loop thread itself, for a handler that only starts work and never blocks. `bootstrap`
    puts the connection on another awscrt client's event loop (the processor's S3 client). With
    manual_ack=True every QoS 1 message is PUBACKed only when `ack(message)` is called, so a consumer
    acknowledges after its work is done; receive_maximum then bounds how many unacknowledged messages the
    broker sends.
    `with MqttClient(...) as client:` starts the client (unless it already is) and stops it on exit.
    """

    def __init__(
        self,
        settings: MqttSettings,
        client_id: str,
        *,
        persistent: bool = False,
        status: StatusTopic | None = None,
        on_message: MessageHandler | None = None,
        manual_ack: bool = False,
        receive_maximum: int | None = None,
        handler_threads: int = 1,
        bootstrap: io.ClientBootstrap | None = None,
    ) -> None:
        self.settings = settings
        self.client_id = settings.client_id or client_id
        self.acks = AckLedger(receive_maximum)
        self.stats = ClientStats(acks=self.acks)
        self._status = status
        self._manual_ack = manual_ack
        self._window = InFlightWindow(settings.max_in_flight)
        self._dispatcher = Dispatcher(f"mqtt-dispatch-{self.client_id}", on_message, handler_threads)
        self._subscriptions: dict[str, int] = {}
        self._connected = threading.Event()
        # Set by every connection attempt's outcome, cleared by the waiter before it looks at the outcome.
        self._attempt_ended = threading.Event()
        self._failure: Exception | None = None
        self._started = False
        self._stopped = threading.Event()
        self._last_failure_log = 0.0
        self._failures_in_a_row = 0  # since the last connection: the attempt a warning names
        options = client_options(settings, self.client_id, persistent=persistent, status=status,
                                 receive_maximum=receive_maximum, bootstrap=bootstrap)
        options.on_publish_callback_fn = self._on_publish
        options.on_lifecycle_event_connection_success_fn = self._on_success
        options.on_lifecycle_event_connection_failure_fn = self._on_failure
        options.on_lifecycle_event_disconnection_fn = self._on_disconnect
        self._client = mqtt5.Client(options)

    # --- lifecycle ---------------------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def in_flight(self) -> int:
        return self._window.count

    @property
    def waiting(self) -> int:
        """Received messages not yet taken by the handler."""
        return self._dispatcher.waiting

    @property
    def on_message(self) -> MessageHandler | None:
        return self._dispatcher.handler

    @on_message.setter
    def on_message(self, handler: MessageHandler | None) -> None:
        """Set the message handler; only before start(), since the dispatcher starts with the client."""
        if self._started:
            raise RuntimeError(f"MQTT client {self.client_id}: set the message handler before start()")
        self._dispatcher.handler = handler

    def set_handler(self, handler: MessageHandler | None) -> None:
        """The same as assigning `on_message`: runs on the dispatcher's threads and must not block for long."""
        self.on_message = handler

    def __enter__(self) -> MqttClient:
        if not self._started:
            self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.stop()

    def start(self, wait: bool = True) -> None:
        """Connect. With wait, block until connected; raise MqttAuthError at once if the broker refuses
        the credentials, MqttConnectError at once when TLS negotiation fails (a wrong CA or certificate;
        s2n delays that report by 10-30 s on purpose) and when nothing succeeded within
        connect_timeout_seconds. Without
        wait, connection problems are logged and retried with backoff in the background."""
        if self.settings.uses_socket:
            # A wrong socket path gives one error naming it, not a retry loop. A missing socket is waited
            # for: a restarting EdgeBroker removes the dead socket of its killed predecessor before
            # Mosquitto binds a new one.
            check_local_paths(self.settings, wait_seconds=self.settings.connect_timeout_seconds)
        self._started = True
        self._dispatcher.start()
        log.info("connecting to %s as client %s", self.settings.describe(), self.client_id)
        self._client.start()
        if wait:
            self._wait_first_connection()

    def _wait_first_connection(self) -> None:
        deadline = time.monotonic() + self.settings.connect_timeout_seconds
        while True:
            # Cleared before the outcome is read, so an attempt that ends meanwhile wakes the wait below.
            self._attempt_ended.clear()
            if self._connected.is_set():
                return
            failure = self._failure
            if failure is not None and (isinstance(failure, MqttAuthError)
                                        or any(name in str(failure) for name in _FATAL_ERRORS)):
                self._client.stop()
                raise failure
            if time.monotonic() > deadline:
                self._client.stop()
                reason = f": {self._failure}" if self._failure else ""
                raise MqttConnectError(
                    f"could not connect to {self.settings.describe()} within "
                    f"{self.settings.connect_timeout_seconds:g} s{reason}")
            self._attempt_ended.wait(max(0.0, deadline - time.monotonic()) + 0.01)

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    def stop(self, timeout: float = 10.0) -> bool:
        """Wait up to `timeout` for in-flight publishes, mark the status offline, and disconnect.
        Returns False if publishes were still in flight when the time ran out. Stopping again only
        reports whether everything completed since (so a `with` block may stop the client early)."""
        if self._stopped.is_set():
            return self.flush(0)
        deadline = time.monotonic() + timeout
        drained = self.flush(timeout)
        self._window.close()  # a publisher still waiting for a slot gets None now
        if self._status is not None and self.connected:
            try:
                self._send(status_packet(self._status, self._status.offline)).result(
                    timeout=min(_STATUS_SECONDS, max(0.1, deadline - time.monotonic())))
            except Exception as exc:  # noqa: BLE001 - best effort; the will covers us
                log.warning("could not publish offline status: %s", exc)
        self._stopped.set()
        # A normal DISCONNECT: the broker discards the will, since we already said `offline` ourselves.
        self._client.stop(mqtt5.DisconnectPacket(reason_code=mqtt5.DisconnectReasonCode.NORMAL_DISCONNECTION))
        self._dispatcher.stop(max(0.1, deadline - time.monotonic()))
        return drained

    def flush(self, timeout: float) -> bool:
        return self._window.wait_empty(timeout)

    # --- publish -----------------------------------------------------------------------------------------

    def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        content_type: str | None = None,
        user_properties: Sequence[tuple[str, str]] | Mapping[str, str] = (),
        retain: bool = False,
        qos: int = 1,
        block: bool = True,
        timeout: float | None = None,
    ) -> Future[None] | None:
        """Queue a publish. Returns a future that completes when the broker PUBACKs it and fails with
        PublishError on a failure reason code. When max_in_flight publishes are pending it blocks (up
        to timeout), or, with block=False, returns None at once so the caller can count a drop."""
        if not self._window.acquire(block=block, timeout=timeout if block else None):
            return None
        items = user_properties.items() if isinstance(user_properties, Mapping) else user_properties
        try:
            inner = self._send(mqtt5.PublishPacket(
                topic=topic, payload=payload, qos=mqtt5.QoS(qos), retain=retain, content_type=content_type,
                user_properties=[mqtt5.UserProperty(name=k, value=v) for k, v in items] or None))
        except Exception:
            self._window.release()
            raise
        outer: Future[None] = Future()
        inner.add_done_callback(lambda done: self._complete(done, outer, topic))
        return outer

    def _send(self, packet: mqtt5.PublishPacket) -> Future[Any]:
        result: Future[Any] = self._client.publish(packet)
        return result

    def _complete(self, inner: Future[Any], outer: Future[None], topic: str) -> None:
        try:
            error = puback_error(inner, topic)
            if error is None:
                self.stats.published += 1
                outer.set_result(None)
            else:
                self.stats.publish_failed += 1
                outer.set_exception(error)
        finally:
            self._window.release()

    # --- subscribe and receive ---------------------------------------------------------------------------

    def subscribe(self, topic_filter: str, qos: int = 1, timeout: float = 10.0) -> None:
        """Subscribe and remember the filter, so it is restored if the broker ever loses the session."""
        self._subscriptions[topic_filter] = qos
        suback = self._send_subscribe({topic_filter: qos}).result(timeout)
        codes = list(getattr(suback, "reason_codes", []) or [])
        if codes and int(codes[0]) >= 0x80:
            reason = getattr(codes[0], "name", codes[0])
            raise MqttConnectError(f"broker refused subscription to {topic_filter}: {reason}")

    def _send_subscribe(self, filters: Mapping[str, int]) -> Future[Any]:
        packet = mqtt5.SubscribePacket(subscriptions=[
            mqtt5.Subscription(topic_filter=f, qos=mqtt5.QoS(q)) for f, q in filters.items()
        ])
        result: Future[Any] = self._client.subscribe(packet)
        return result

    def ack(self, message: ReceivedMessage) -> None:
        """PUBACK a message received in manual-ack mode (a no-op otherwise)."""
        if message.ack_handle is not None:
            self._client.invoke_publish_acknowledgement(message.ack_handle)
            self.acks.acked(message.connection)

    def _on_publish(self, data: mqtt5.PublishReceivedData) -> None:
        # Runs on awscrt's event-loop thread: take what we need and hand off, never block here.
        keep_thread_state()
        packet = data.publish_packet
        handle = None
        if self._manual_ack and data.acquire_publish_acknowledgement_control is not None:
            handle = data.acquire_publish_acknowledgement_control()
        payload = packet.payload
        message = ReceivedMessage(
            topic=packet.topic,
            payload=bytes(payload) if payload is not None else b"",
            content_type=packet.content_type,
            user_properties=tuple((p.name, p.value) for p in (packet.user_properties or [])),
            qos=int(packet.qos),
            retain=bool(packet.retain),
            ack_handle=handle,
            connection=self.acks.connection,
        )
        self.stats.received += 1
        if handle is not None:
            self.acks.received()
        self._dispatcher.put(message)

    # --- lifecycle callbacks (awscrt threads) ------------------------------------------------------------

    def _on_success(self, data: mqtt5.LifecycleConnectSuccessData) -> None:
        keep_thread_state()  # this connection's thread also runs its publish completions
        self.stats.connects += 1
        self.acks.new_connection()
        session_present = bool(data.connack_packet and data.connack_packet.session_present)
        log.info("connected to %s (session present: %s)", self.settings.describe(), session_present)
        if self._subscriptions and not session_present:
            # awscrt does not restore subscriptions itself when the broker has no session for us.
            self._send_subscribe(dict(self._subscriptions))
        if self._status is not None:
            self._send(status_packet(self._status, self._status.online))
        self._failure = None
        self._failures_in_a_row = 0
        self._connected.set()
        self._attempt_ended.set()

    def _on_failure(self, data: mqtt5.LifecycleConnectFailureData) -> None:
        self.stats.connect_failures += 1
        code = getattr(data.connack_packet, "reason_code", None) if data.connack_packet else None
        if code is not None and code in _AUTH_FAILURES:
            self._failure = MqttAuthError(
                f"{self.settings.describe()} refused client {self.client_id}: {code.name}")
        else:
            self._failure = MqttConnectError(f"{self.settings.describe()}: {data.exception}")
        # The first failure of each outage, then one every 10 s; counted from the last connection, so that
        # after months of uptime the count still says how long this outage is.
        self._failures_in_a_row += 1
        now = time.monotonic()
        if now - self._last_failure_log > 10 or self._failures_in_a_row == 1:
            self._last_failure_log = now
            log.warning("connection failed (attempt %d), retrying with backoff: %s",
                        self._failures_in_a_row, self._failure)
        self._attempt_ended.set()

    def _on_disconnect(self, data: mqtt5.LifecycleDisconnectData) -> None:
        self._connected.clear()
        if not self._stopped.is_set():
            log.warning("disconnected from %s: %s", self.settings.describe(), data.exception)
