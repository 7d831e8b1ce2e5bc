"""The MQTT 5 client every facecap component uses, over awscrt (the client inside awsiotsdk).

It handles the pitfalls we measured (DESIGN.md): metrics are disabled so username/password auth works;
persistent sessions use a fixed client id, a session expiry and REJOIN_ALWAYS, and subscriptions are
restored when the broker lost the session; a PUBACK with a failure code becomes an exception; the
client's own threads never run user code (a dispatcher thread does); and many publishes stay in flight,
bounded by a semaphore so memory stays bounded too.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from awscrt import io, mqtt5
from pydantic import Field, SecretStr, model_validator

from .config import ConfigModel
from .errors import MqttAuthError, MqttConnectError, PublishError

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


class MqttSettings(ConfigModel):
    """How to reach a broker. Shared by every component's configuration under the key `mqtt`."""

    host: str = Field("127.0.0.1", description="Broker host name or address.")
    port: int = Field(1883, ge=1, le=65535, description="Broker port (8883 is the usual TLS port).")
    tls: bool = Field(False, description="Connect with TLS.")
    ca_file: str = Field("", description="PEM file of the CA that signed the broker's certificate (TLS).")
    cert_file: str = Field("", description="PEM client certificate for mutual TLS (optional).")
    key_file: str = Field("", description="PEM private key of the client certificate.")
    username: str = Field("", description="User name for password authentication (optional).")
    password_file: str = Field("", description="File whose first line is the password; keeps it out of configs.")
    password: SecretStr = Field(SecretStr(""), description="Password itself (prefer passwordFile); never logged.")
    client_id: str = Field("", description="Client id; empty derives one from the device id and component.")
    keep_alive_seconds: int = Field(60, ge=5, le=65535, description="MQTT keep-alive interval.")
    session_expiry_seconds: int = Field(
        7 * 24 * 3600, ge=0, description="How long the broker keeps a persistent session while disconnected."
    )
    max_in_flight: int = Field(256, ge=1, le=65535, description="Publishes awaiting PUBACK at most.")
    connect_timeout_seconds: float = Field(15.0, gt=0, description="How long a start waits for the first CONNACK.")
    min_reconnect_delay_seconds: float = Field(0.5, gt=0, description="First reconnect delay (backoff start).")
    max_reconnect_delay_seconds: float = Field(30.0, gt=0, description="Reconnect backoff ceiling.")

    @model_validator(mode="after")
    def _check_files(self) -> MqttSettings:
        if (self.cert_file == "") != (self.key_file == ""):
            raise ValueError("certFile and keyFile go together")
        if self.password_file and self.password.get_secret_value():
            raise ValueError("set password or passwordFile, not both")
        return self

    def read_password(self) -> str:
        if self.password_file:
            lines = Path(self.password_file).read_text(encoding="utf-8").splitlines()
            return lines[0] if lines else ""
        return self.password.get_secret_value()

    def describe(self) -> str:
        """Where we connect, for logs; never includes the password."""
        auth = f" as {self.username}" if self.username else ""
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}{auth}"


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


@dataclass
class ClientStats:
    published: int = 0
    publish_failed: int = 0
    received: int = 0
    connects: int = 0
    connect_failures: int = 0
    # Manual-ack mode: the most messages held unacknowledged at once on one connection. Above the
    # receive maximum means the broker broke its promise (see MqttClient._count_unacked).
    unacked_peak: int = 0


def tls_context(settings: MqttSettings) -> io.ClientTlsContext | None:
    if not settings.tls:
        return None
    for key, path in (("caFile", settings.ca_file), ("certFile", settings.cert_file), ("keyFile", settings.key_file)):
        if path and not Path(path).is_file():
            raise MqttConnectError(f"mqtt.{key}: file {path} does not exist")
    if settings.cert_file:
        options = io.TlsContextOptions.create_client_with_mtls_from_path(settings.cert_file, settings.key_file)
    else:
        options = io.TlsContextOptions()
    if settings.ca_file:
        options.override_default_trust_store_from_path(None, settings.ca_file)
    return io.ClientTlsContext(options)


class MqttClient:
    """A started-once MQTT 5 connection with bounded in-flight publishes and a dispatcher for messages.

    on_message runs on one dispatcher thread in arrival order. With manual_ack=True every QoS 1 message
    is PUBACKed only when `ack(message)` is called, so a consumer acknowledges after its work is done;
    receive_maximum then bounds how many unacknowledged messages the broker sends.
    """

    def __init__(
        self,
        settings: MqttSettings,
        client_id: str,
        *,
        persistent: bool = False,
        status: StatusTopic | None = None,
        on_message: Callable[[ReceivedMessage], None] | None = None,
        manual_ack: bool = False,
        receive_maximum: int | None = None,
    ) -> None:
        self.settings = settings
        self.client_id = settings.client_id or client_id
        self.stats = ClientStats()
        self._status = status
        self._on_message = on_message
        self._manual_ack = manual_ack
        self._receive_maximum = receive_maximum
        self._unacked = 0
        self._unacked_lock = threading.Lock()
        self._connection = 0
        self._overrun_reported = False
        self._slots = threading.BoundedSemaphore(settings.max_in_flight)
        self._in_flight = 0
        self._in_flight_lock = threading.Lock()
        self._idle = threading.Condition(self._in_flight_lock)
        self._subscriptions: dict[str, int] = {}
        self._connected = threading.Event()
        self._first_result = threading.Event()
        self._failure: Exception | None = None
        self._stopped = threading.Event()
        self._inbox: queue.SimpleQueue[ReceivedMessage | None] = queue.SimpleQueue()
        self._dispatcher: threading.Thread | None = None
        self._last_failure_log = 0.0

        will = None
        if status is not None:
            will = mqtt5.PublishPacket(topic=status.topic, payload=status.offline,
                                       qos=mqtt5.QoS.AT_LEAST_ONCE, retain=True)
        connect = mqtt5.ConnectPacket(
            client_id=self.client_id,
            keep_alive_interval_sec=settings.keep_alive_seconds,
            username=settings.username or None,
            password=settings.read_password() or None,
            session_expiry_interval_sec=settings.session_expiry_seconds if persistent else 0,
            receive_maximum=receive_maximum,
            will=will,
        )
        options = mqtt5.ClientOptions(
            host_name=settings.host,
            port=settings.port,
            tls_ctx=tls_context(settings),
            connect_options=connect,
            session_behavior=(mqtt5.ClientSessionBehaviorType.REJOIN_ALWAYS if persistent
                              else mqtt5.ClientSessionBehaviorType.CLEAN),
            # QoS 1 publishes wait in the client across reconnects instead of failing.
            offline_queue_behavior=mqtt5.ClientOperationQueueBehaviorType.FAIL_QOS0_PUBLISH_ON_DISCONNECT,
            min_reconnect_delay_ms=int(settings.min_reconnect_delay_seconds * 1000),
            max_reconnect_delay_ms=int(settings.max_reconnect_delay_seconds * 1000),
            connack_timeout_ms=int(settings.connect_timeout_seconds * 1000),
            on_publish_callback_fn=self._on_publish,
            on_lifecycle_event_connection_success_fn=self._on_success,
            on_lifecycle_event_connection_failure_fn=self._on_failure,
            on_lifecycle_event_disconnection_fn=self._on_disconnect,
            # Without this awscrt rewrites the username with SDK metrics and password auth fails.
            disable_metrics=True,
        )
        self._client = mqtt5.Client(options)

    # --- lifecycle ---------------------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def start(self, wait: bool = True) -> None:
        """Connect. With wait, block until connected; raise MqttAuthError at once if the broker refuses
        the credentials, MqttConnectError at once when TLS negotiation fails (a wrong CA or certificate;
        s2n delays that report by 10-30 s on purpose) and when nothing succeeded within
        connect_timeout_seconds. Without
        wait, connection problems are logged and retried with backoff in the background."""
        if self._on_message is not None and self._dispatcher is None:
            self._dispatcher = threading.Thread(target=self._dispatch, name=f"mqtt-dispatch-{self.client_id}",
                                                daemon=True)
            self._dispatcher.start()
        log.info("connecting to %s as client %s", self.settings.describe(), self.client_id)
        self._client.start()
        if not wait:
            return
        deadline = time.monotonic() + self.settings.connect_timeout_seconds
        while not self._connected.is_set():
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
            self._first_result.wait(0.05)

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    def stop(self, timeout: float = 10.0) -> bool:
        """Wait up to `timeout` for in-flight publishes, mark the status offline, and disconnect.
        Returns False if publishes were still in flight when the time ran out."""
        drained = self.flush(timeout)
        if self._status is not None and self.connected:
            done = self._raw_publish(self._status.topic, self._status.offline, retain=True)
            try:
                done.result(timeout=2)
            except Exception as exc:  # noqa: BLE001 - best effort; the will covers us
                log.warning("could not publish offline status: %s", exc)
        self._stopped.set()
        # A normal DISCONNECT: the broker discards the will, since we already said `offline` ourselves.
        self._client.stop(mqtt5.DisconnectPacket(reason_code=mqtt5.DisconnectReasonCode.NORMAL_DISCONNECTION))
        if self._dispatcher is not None:
            self._inbox.put(None)
            self._dispatcher.join(timeout)
        return drained

    def flush(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._in_flight > 0:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._idle.wait(remaining)
        return True

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
        if not self._slots.acquire(blocking=block, timeout=timeout if block else None):
            return None
        with self._in_flight_lock:
            self._in_flight += 1
        try:
            inner = self._raw_publish(topic, payload, content_type=content_type,
                                      user_properties=user_properties, retain=retain, qos=qos)
        except Exception:
            self._release()
            raise
        outer: Future[None] = Future()
        inner.add_done_callback(lambda f: self._complete(f, outer, topic))
        return outer

    def _raw_publish(
        self,
        topic: str,
        payload: bytes,
        *,
        content_type: str | None = None,
        user_properties: Sequence[tuple[str, str]] | Mapping[str, str] = (),
        retain: bool = False,
        qos: int = 1,
    ) -> Future[Any]:
        items = user_properties.items() if isinstance(user_properties, Mapping) else user_properties
        packet = mqtt5.PublishPacket(
            topic=topic,
            payload=payload,
            qos=mqtt5.QoS(qos),
            retain=retain,
            content_type=content_type,
            user_properties=[mqtt5.UserProperty(name=k, value=v) for k, v in items] or None,
        )
        result: Future[Any] = self._client.publish(packet)
        return result

    def _complete(self, inner: Future[Any], outer: Future[None], topic: str) -> None:
        try:
            error = inner.exception()
            if error is None:
                puback = inner.result().puback
                code = getattr(puback, "reason_code", None)
                if puback is not None and code not in _PUBACK_OK:
                    reason = getattr(puback, "reason_string", None) or ""
                    error = PublishError(f"broker refused publish to {topic}: {getattr(code, 'name', code)} {reason}")
            else:
                error = PublishError(f"publish to {topic} failed: {error}")
            if error is None:
                self.stats.published += 1
                outer.set_result(None)
            else:
                self.stats.publish_failed += 1
                outer.set_exception(error)
        finally:
            self._release()

    def _release(self) -> None:
        self._slots.release()
        with self._idle:
            self._in_flight -= 1
            if self._in_flight == 0:
                self._idle.notify_all()

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
            with self._unacked_lock:
                if message.connection == self._connection:
                    self._unacked = max(0, self._unacked - 1)

    def _on_publish(self, data: mqtt5.PublishReceivedData) -> None:
        # Runs on awscrt's event-loop thread: take what we need and hand off, never block here.
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
            connection=self._connection,
        )
        self.stats.received += 1
        if handle is not None:
            self._count_unacked()
        self._inbox.put(message)

    def _count_unacked(self) -> None:
        # A broker must not send more unacknowledged QoS 1 messages than the receive maximum we asked
        # for; that bound is what keeps a slow consumer's memory flat. Mosquitto before 2.0.13 breaks
        # it (each PUBACK of the oldest message lets a whole receive maximum more through, fixed by
        # "Various fixes around inflight quota management", #2306). Nothing here can refuse the
        # messages, so say it once per connection: memory then grows with the broker's backlog.
        with self._unacked_lock:
            self._unacked += 1
            self.stats.unacked_peak = max(self.stats.unacked_peak, self._unacked)
            overrun = (self._receive_maximum is not None and self._unacked > self._receive_maximum
                       and not self._overrun_reported)
            if overrun:
                self._overrun_reported = True
        if overrun:
            log.warning("the broker sent more than %d unacknowledged messages, the receive maximum this client "
                        "asked for: the messages in hand, and their memory, now grow with the broker's backlog. "
                        "Mosquitto before 2.0.13 does this; run 2.0.13 or later for the cloud broker (the "
                        "compose file's eclipse-mosquitto:2.0 is)", self._receive_maximum)

    def _dispatch(self) -> None:
        assert self._on_message is not None
        while (message := self._inbox.get()) is not None:
            try:
                self._on_message(message)
            except Exception:
                log.exception("message handler failed on %s; message left unacknowledged", message.topic)

    # --- lifecycle callbacks (awscrt threads) ------------------------------------------------------------

    def _on_success(self, data: mqtt5.LifecycleConnectSuccessData) -> None:
        self.stats.connects += 1
        with self._unacked_lock:
            # The broker counts afresh on a new connection (and redelivers what was not acknowledged).
            self._connection += 1
            self._unacked = 0
            self._overrun_reported = False
        session_present = bool(data.connack_packet and data.connack_packet.session_present)
        log.info("connected to %s (session present: %s)", self.settings.describe(), session_present)
        if self._subscriptions and not session_present:
            # awscrt does not restore subscriptions itself when the broker has no session for us.
            self._send_subscribe(dict(self._subscriptions))
        if self._status is not None:
            self._raw_publish(self._status.topic, self._status.online, retain=True)
        self._failure = None
        self._connected.set()
        self._first_result.set()

    def _on_failure(self, data: mqtt5.LifecycleConnectFailureData) -> None:
        self.stats.connect_failures += 1
        code = getattr(data.connack_packet, "reason_code", None) if data.connack_packet else None
        if code is not None and code in _AUTH_FAILURES:
            self._failure = MqttAuthError(
                f"{self.settings.describe()} refused client {self.client_id}: {code.name}")
        else:
            self._failure = MqttConnectError(f"{self.settings.describe()}: {data.exception}")
        now = time.monotonic()
        if now - self._last_failure_log > 10 or self.stats.connect_failures == 1:
            self._last_failure_log = now
            log.warning("connection failed (attempt %d), retrying with backoff: %s",
                        self.stats.connect_failures, self._failure)
        self._first_result.set()

    def _on_disconnect(self, data: mqtt5.LifecycleDisconnectData) -> None:
        self._connected.clear()
        if not self._stopped.is_set():
            log.warning("disconnected from %s: %s", self.settings.describe(), data.exception)
