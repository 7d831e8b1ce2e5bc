"""A stand-in for the Greengrass nucleus's IPC server: eventstream RPC over a Unix socket, so the unmodified
awsiotsdk client (`awsiot.greengrasscoreipc.clientv2`) talks to it as it talks to the nucleus.

Written from the public sources of the protocol (aws-c-event-stream's RPC layer, awsiotsdk's eventstreamrpc)
and of the nucleus (IPCEventStreamService, ServiceOperationMappingContinuationHandler,
OperationContinuationHandler, ConfigStoreIPCEventStreamAgent, LifecycleIPCEventStreamAgent, MqttProxyIPCAgent,
AuthorizationHandler). What it does as the nucleus does:

* every message carries `:message-type`, `:message-flags` and `:stream-id` (int32); stream 0 is the connection;
* CONNECT needs `:version` 0.1.0 and a JSON payload `{"authToken": ...}`: the component's SVCUID. A known token
  gets CONNECT_ACK with CONNECTION_ACCEPTED; anything else gets CONNECT_ACK without it, then the connection is
  closed. A stream before the handshake is a protocol error;
* a client stream starts with an `operation` header (`aws.greengrass#GetConfiguration`); the response carries
  `service-model-type` and `:content-type: application/json`; a plain operation's response terminates the
  stream, a subscription's response leaves it open for events; a modelled error is an APPLICATION_ERROR with
  the error's shape name (`aws.greengrass#UnauthorizedError`) and `{"message": ...}`, terminating the stream;
* the configuration operations (get, subscribe, validate, report) and UpdateState need no authorization policy,
  and any component may read any component's configuration; PublishToIoTCore needs a policy of the calling
  component for `aws.greengrass.ipc.mqttproxy` that names the operation (or `*`) and a matching topic
  (MQTT wildcards `+`/`#`, and `*`), else UnauthorizedError "Not Authorized";
* a validation subscription is one per component (the first one wins until its stream closes); a report is
  accepted only for a validation that is pending, else InvalidArgumentsError;
* a configuration subscription gets one event per changed key, with the key path relative to the
  component's configuration, and only changes below the subscribed key path.

What it does not model: the operations facecap does not use (they answer ServiceError naming the stand-in),
pings from the server, the socket's file permissions, and policies with `${...}` variables or `?`.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import re
import socket
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import Any, Protocol

from .eventstream import FrameReader, FramingError, Header, Message, encode_message

logger = logging.getLogger(__name__)

VERSION = "0.1.0"
CONNECTION_ACCEPTED = 0x1
TERMINATE_STREAM = 0x2
MQTT_PROXY = "aws.greengrass.ipc.mqttproxy"
NAMESPACE = "aws.greengrass#"


class MessageType(IntEnum):
    APPLICATION_MESSAGE = 0
    APPLICATION_ERROR = 1
    PING = 2
    PING_RESPONSE = 3
    CONNECT = 4
    CONNECT_ACK = 5
    PROTOCOL_ERROR = 6
    INTERNAL_ERROR = 7


class IpcError(Exception):
    """A modelled error of the Greengrass IPC service, sent as APPLICATION_ERROR."""

    def __init__(self, shape: str, message: str) -> None:
        super().__init__(message)
        self.shape = NAMESPACE + shape
        self.message = message


class Backend(Protocol):
    """What the IPC server needs from the nucleus."""

    def component_for_token(self, token: str) -> str | None: ...

    def configuration_of(self, component: str) -> dict[str, Any] | None: ...

    def report_state(self, component: str, state: str) -> None: ...


# --- authorization --------------------------------------------------------------------------------------------

def _topic_matches(pattern: str, topic: str) -> bool:
    """MQTT-style resource matching as the nucleus's WildcardTrie does it, for the common cases."""
    if pattern in ("*", "#"):
        return True
    regex = ""
    levels = pattern.split("/")
    for index, level in enumerate(levels):
        separator = "/" if index else ""
        if level == "#" and index == len(levels) - 1:
            regex += "(/.*)?" if index else ".*"
        elif level == "+":
            regex += separator + "[^/]*"
        else:
            regex += separator + ".*".join(re.escape(part) for part in level.split("*"))
    return re.fullmatch(regex, topic) is not None


def is_authorized(configuration: Mapping[str, Any] | None, destination: str, operation: str, resource: str) -> bool:
    """A policy in the component's own `accessControl` allows the operation on the resource.

    The principal of a policy is always the component whose configuration holds it (AuthorizationPolicyParser).
    """
    access = (configuration or {}).get("accessControl")
    policies = access.get(destination) if isinstance(access, Mapping) else None
    if not isinstance(policies, Mapping):
        return False
    for policy in policies.values():
        if not isinstance(policy, Mapping):
            continue
        operations = policy.get("operations") or []
        resources = policy.get("resources") or []
        if (operation in operations or "*" in operations) and any(
                isinstance(r, str) and _topic_matches(r, resource) for r in resources):
            return True
    return False


# --- streams and connections ----------------------------------------------------------------------------------

@dataclass(eq=False)
class Stream:
    connection: Connection
    stream_id: int
    operation: str
    component: str
    active: bool = False  # a subscription receives events only after its response went out
    closed: bool = False
    on_close: list[Callable[[], None]] = field(default_factory=list)

    def send(self, model: str, payload: Mapping[str, Any], *, error: bool = False, terminate: bool = False) -> None:
        if self.closed:
            return
        headers = [Header.string(":content-type", "application/json"), Header.string("service-model-type", model)]
        kind = MessageType.APPLICATION_ERROR if error else MessageType.APPLICATION_MESSAGE
        self.connection.send(kind, TERMINATE_STREAM if terminate else 0, self.stream_id, headers,
                             json.dumps(payload).encode())
        if terminate:
            self.close()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            for callback in self.on_close:
                callback()


class Connection:
    """One client: the handshake, then its streams, served on a thread of its own."""

    def __init__(self, server: IpcServer, sock: socket.socket) -> None:
        self.server = server
        self.sock = sock
        self.component: str | None = None
        self.streams: dict[int, Stream] = {}
        self.latest_stream_id = 0
        self.refused = False
        self._write_lock = threading.Lock()

    def send(self, kind: MessageType, flags: int, stream_id: int, headers: Sequence[Header] = (),
             payload: bytes = b"") -> None:
        rpc_headers = [Header.int32(":message-type", kind), Header.int32(":message-flags", flags),
                       Header.int32(":stream-id", stream_id)]
        frame = encode_message([*rpc_headers, *headers], payload)
        with self._write_lock, contextlib.suppress(OSError):
            self.sock.sendall(frame)

    def serve(self) -> None:
        reader = FrameReader()
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    break
                for message in reader.feed(data):
                    if not self._handle(message):
                        return
        except (OSError, FramingError) as error:
            logger.info("IPC connection of %s dropped: %s", self.component, error)
        finally:
            self.close()

    def close(self) -> None:
        for stream in list(self.streams.values()):
            stream.close()
        self.streams.clear()
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()

    def _protocol_error(self, reason: str) -> bool:
        logger.warning("IPC protocol error from %s: %s", self.component, reason)
        self.send(MessageType.PROTOCOL_ERROR, 0, 0, [Header.string(":content-type", "application/json")],
                  json.dumps({"message": reason}).encode())
        return False

    def _handle(self, message: Message) -> bool:
        """Route one message; False closes the connection."""
        kind, flags, stream_id = (message.header(n) for n in (":message-type", ":message-flags", ":stream-id"))
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (kind, flags, stream_id)):
            return self._protocol_error("missing or mistyped :message-type, :message-flags or :stream-id")
        assert isinstance(kind, int) and isinstance(flags, int) and isinstance(stream_id, int)
        if stream_id == 0:
            return self._handle_protocol_message(kind, message)
        if self.component is None:
            return self._protocol_error("a stream before the connect handshake completed")
        if kind not in (MessageType.APPLICATION_MESSAGE, MessageType.APPLICATION_ERROR):
            return self._protocol_error("only application messages may be sent on a stream")
        return self._handle_stream(self.component, stream_id, flags, message)

    def _handle_stream(self, component: str, stream_id: int, flags: int, message: Message) -> bool:
        stream = self.streams.get(stream_id)
        if stream is not None:
            if flags & TERMINATE_STREAM:
                stream.close()  # the client closed its subscription
            return True
        if stream_id <= self.latest_stream_id:
            return True  # a message for a stream that has already closed
        operation = message.header("operation")
        if not isinstance(operation, str):
            return self._protocol_error("a new stream without an operation header")
        self.latest_stream_id = stream_id
        stream = Stream(self, stream_id, operation, component)
        stream.on_close.append(lambda: self._forget(stream_id))
        self.streams[stream_id] = stream
        if flags & TERMINATE_STREAM:
            stream.close()  # a request that hangs up at once is not run (OperationContinuationHandler)
        else:
            self.server.dispatch(stream, message.payload)
        return True

    def _forget(self, stream_id: int) -> None:
        self.streams.pop(stream_id, None)

    def _handle_protocol_message(self, kind: int, message: Message) -> bool:
        if kind == MessageType.CONNECT:
            if self.component is not None or self.refused:
                return self._protocol_error("a second CONNECT")
            self.component = self.server.authenticate(message)
            self.send(MessageType.CONNECT_ACK, CONNECTION_ACCEPTED if self.component else 0, 0)
            if self.component is None:
                # The nucleus closes right after the refusal. Waiting a moment for the client to close first
                # lets awsiotsdk report AccessDeniedError rather than a closed socket; then we close anyway.
                self.sock.settimeout(0.5)
                self.refused = True
            return True
        if self.refused:
            return self._protocol_error("a message after the connection was refused")
        if self.component is None:
            return self._protocol_error("a message before the connect handshake completed")
        if kind == MessageType.PING:
            headers = [h for h in message.headers if not h.name.startswith(":")]
            self.send(MessageType.PING_RESPONSE, 0, 0, headers, message.payload)
        return kind in (MessageType.PING, MessageType.PING_RESPONSE) or self._protocol_error(
            f"message type {kind} on stream 0")


# --- the server -----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PublishedMessage:
    """A PublishToIoTCore request the stand-in accepted (it has no cloud to send it to)."""

    component: str
    topic: str
    qos: str
    payload: bytes
    retain: bool
    content_type: str | None


@dataclass
class _Subscription:
    stream: Stream
    component: str  # whose configuration
    key_path: tuple[str, ...]


class IpcServer:
    """The nucleus's IPC service on a Unix socket, backed by the nucleus stand-in's components."""

    def __init__(self, path: Path, backend: Backend) -> None:
        self.path = path
        self.backend = backend
        self.published: list[PublishedMessage] = []
        self.denied: list[tuple[str, str, str]] = []  # (component, operation, resource) refused by accessControl
        self._validators: dict[str, Stream] = {}
        self._reports: dict[tuple[str, str], Future[dict[str, Any]]] = {}
        self._subscriptions: list[_Subscription] = []
        self._connections: list[Connection] = []
        self._lock = threading.RLock()
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._operations: dict[str, Callable[[Stream, dict[str, Any]], dict[str, Any]]] = {
            NAMESPACE + "GetConfiguration": self._get_configuration,
            NAMESPACE + "SubscribeToConfigurationUpdate": self._subscribe_configuration,
            NAMESPACE + "SubscribeToValidateConfigurationUpdates": self._subscribe_validation,
            NAMESPACE + "SendConfigurationValidityReport": self._validity_report,
            NAMESPACE + "UpdateState": self._update_state,
            NAMESPACE + "PublishToIoTCore": self._publish_to_iot_core,
        }
        self._streaming = {NAMESPACE + "SubscribeToConfigurationUpdate",
                           NAMESPACE + "SubscribeToValidateConfigurationUpdates"}

    # lifecycle
    def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(self.path))
        listener.listen(16)
        self._listener = listener
        self._thread = threading.Thread(target=self._accept, name="ipc-accept", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
            self._listener = None
        with self._lock:
            connections, self._connections = self._connections, []
        for connection in connections:
            connection.close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def _accept(self) -> None:
        while self._listener is not None:
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            connection = Connection(self, sock)
            with self._lock:
                self._connections.append(connection)
            threading.Thread(target=connection.serve, name="ipc-connection", daemon=True).start()

    def authenticate(self, message: Message) -> str | None:
        version = message.header(":version")
        if version != VERSION:
            logger.warning("IPC client version %r, the server speaks %s", version, VERSION)
            return None
        try:
            token = json.loads(message.payload or b"{}").get("authToken")
        except (ValueError, AttributeError):
            return None
        component = self.backend.component_for_token(token) if isinstance(token, str) and token else None
        logger.info("IPC connect: %s", component or "unknown token refused")
        return component

    def dispatch(self, stream: Stream, payload: bytes) -> None:
        handler = self._operations.get(stream.operation)
        try:
            if handler is None:
                raise IpcError("ServiceError", f"{stream.operation} is not modelled by the IPC stand-in")
            request = json.loads(payload or b"{}")
            if not isinstance(request, dict):
                raise IpcError("InvalidArgumentsError", "the request is not a JSON object")
            response = handler(stream, request)
            streaming = stream.operation in self._streaming
            stream.send(stream.operation + "Response", response, terminate=not streaming)
            stream.active = streaming
        except IpcError as error:
            stream.send(error.shape, {"message": error.message}, error=True, terminate=True)
        except Exception:
            logger.exception("IPC %s failed", stream.operation)
            stream.connection.send(MessageType.APPLICATION_ERROR, TERMINATE_STREAM, stream.stream_id,
                                   [Header.string(":content-type", "text/plain")], b"InternalServerError")
            stream.close()

    # operations
    def _configuration(self, component: str) -> dict[str, Any]:
        configuration = self.backend.configuration_of(component)
        if configuration is None:
            raise IpcError("ResourceNotFoundError", "Key not found")
        return configuration

    def _get_configuration(self, stream: Stream, request: dict[str, Any]) -> dict[str, Any]:
        component = request.get("componentName") or stream.component
        node: Any = self._configuration(component)
        key_path = request.get("keyPath") or []
        for key in key_path:
            if not isinstance(node, dict) or key not in node:
                raise IpcError("ResourceNotFoundError", "Key not found")
            node = node[key]
        # A leaf comes back as {its name: its value}, a container as itself (GetConfigurationOperationHandler).
        value = node if isinstance(node, dict) else {key_path[-1]: node}
        return {"componentName": component, "value": value}

    def _subscribe_configuration(self, stream: Stream, request: dict[str, Any]) -> dict[str, Any]:
        component = request.get("componentName") or stream.component
        node: Any = self._configuration(component)
        key_path = tuple(request.get("keyPath") or ())
        for key in key_path:
            if not isinstance(node, dict) or key not in node:
                raise IpcError("ResourceNotFoundError", "Key not found")
            node = node[key]
        subscription = _Subscription(stream, component, key_path)
        with self._lock:
            self._subscriptions.append(subscription)
        stream.on_close.append(lambda: self._drop_subscription(subscription))
        return {}

    def _drop_subscription(self, subscription: _Subscription) -> None:
        with self._lock, contextlib.suppress(ValueError):
            self._subscriptions.remove(subscription)

    def _subscribe_validation(self, stream: Stream, request: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            self._validators.setdefault(stream.component, stream)
        stream.on_close.append(lambda: self._drop_validator(stream))
        return {}

    def _drop_validator(self, stream: Stream) -> None:
        # onStreamClosed removes the component's validator, whichever stream registered it.
        with self._lock:
            self._validators.pop(stream.component, None)

    def _validity_report(self, stream: Stream, request: dict[str, Any]) -> dict[str, Any]:
        report = request.get("configurationValidityReport") or {}
        deployment_id = report.get("deploymentId")
        if deployment_id is None:
            raise IpcError("InvalidArgumentsError",
                           "Cannot accept configuration validity report, the deployment ID provided was null")
        with self._lock:
            pending = self._reports.pop((stream.component, deployment_id), None)
        if pending is None:
            raise IpcError("InvalidArgumentsError", "Validation request either timed out or was never made")
        if not pending.done():
            pending.set_result(dict(report))
        return {}

    def _update_state(self, stream: Stream, request: dict[str, Any]) -> dict[str, Any]:
        state = request.get("state")
        if state not in ("RUNNING", "ERRORED"):
            raise IpcError("InvalidArgumentsError", f"state must be RUNNING or ERRORED, not {state!r}")
        self.backend.report_state(stream.component, state)
        return {}

    def _publish_to_iot_core(self, stream: Stream, request: dict[str, Any]) -> dict[str, Any]:
        topic = request.get("topicName")
        if not isinstance(topic, str) or not topic:
            raise IpcError("InvalidArgumentsError", "topicName is required")
        configuration = self.backend.configuration_of(stream.component)
        if not is_authorized(configuration, MQTT_PROXY, stream.operation, topic):
            with self._lock:
                self.denied.append((stream.component, stream.operation, topic))
            raise IpcError("UnauthorizedError", "Not Authorized")
        message = PublishedMessage(stream.component, topic, str(request.get("qos", "0")),
                                   base64.b64decode(request.get("payload") or ""), bool(request.get("retain")),
                                   request.get("contentType"))
        with self._lock:
            self.published.append(message)
        return {}

    # what the nucleus's deployment side calls
    def request_validation(self, component: str, deployment_id: str,
                           configuration: Mapping[str, Any]) -> Future[dict[str, Any]] | None:
        """Send the proposed configuration to the component's validator; None when it has none."""
        with self._lock:
            stream = self._validators.get(component)
            if stream is None or not stream.active:
                return None
            report: Future[dict[str, Any]] = Future()
            self._reports[(component, deployment_id)] = report
        event = {"validateConfigurationUpdateEvent": {"configuration": dict(configuration),
                                                      "deploymentId": deployment_id}}
        stream.send(NAMESPACE + "ValidateConfigurationUpdateEvents", event)
        return report

    def discard_validation(self, component: str, deployment_id: str) -> None:
        with self._lock:
            report = self._reports.pop((component, deployment_id), None)
        if report is not None:
            report.cancel()

    def configuration_changed(self, component: str, key_paths: Sequence[Sequence[str]]) -> None:
        """One ConfigurationUpdateEvents per changed key, to every subscription at or above that key."""
        with self._lock:
            subscriptions = [s for s in self._subscriptions if s.component == component and s.stream.active]
        for path in key_paths:
            for subscription in subscriptions:
                if tuple(path[:len(subscription.key_path)]) == subscription.key_path:
                    event = {"configurationUpdateEvent": {"componentName": component, "keyPath": list(path)}}
                    subscription.stream.send(NAMESPACE + "ConfigurationUpdateEvents", event)

    def has_validator(self, component: str) -> bool:
        with self._lock:
            stream = self._validators.get(component)
            return stream is not None and stream.active

    def has_configuration_subscriber(self, component: str) -> bool:
        with self._lock:
            return any(s.component == component and s.stream.active for s in self._subscriptions)


def changed_key_paths(old: Any, new: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """The leaf keys that differ between two configurations (added, removed or changed)."""
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        paths: list[tuple[str, ...]] = []
        for key in sorted(set(old) | set(new), key=str):
            paths += changed_key_paths(old.get(key), new.get(key), (*prefix, str(key)))
        return paths
    return [] if old == new else [prefix]
