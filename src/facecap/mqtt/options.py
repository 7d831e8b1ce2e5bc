"""The awscrt MQTT 5 client options for our settings, with the quirks measured in DESIGN.md."""

from __future__ import annotations

from awscrt import io, mqtt5

from .messages import StatusTopic
from .settings import MqttSettings, tls_context


def status_packet(status: StatusTopic, payload: bytes) -> mqtt5.PublishPacket:
    """A retained QoS 1 publish of `payload` on the status topic (online, offline, and the will)."""
    return mqtt5.PublishPacket(topic=status.topic, payload=payload, qos=mqtt5.QoS.AT_LEAST_ONCE, retain=True)


def client_options(settings: MqttSettings, client_id: str, *, persistent: bool, status: StatusTopic | None,
                   receive_maximum: int | None, bootstrap: io.ClientBootstrap | None = None) -> mqtt5.ClientOptions:
    """Everything but the callbacks, which the caller sets on the result."""
    connect = mqtt5.ConnectPacket(
        client_id=client_id,
        keep_alive_interval_sec=settings.keep_alive_seconds,  # awscrt's own default is 1200 s
        username=settings.username or None,
        password=settings.read_password() or None,
        # A persistent session needs a fixed client id, an expiry > 0 and REJOIN_ALWAYS below.
        session_expiry_interval_sec=settings.session_expiry_seconds if persistent else 0,
        receive_maximum=receive_maximum,
        will=status_packet(status, status.offline) if status is not None else None,
    )
    socket_options = None
    if settings.uses_socket:
        # awscrt takes a Unix socket as the host name, with port 0 and the Local domain (DESIGN.md).
        socket_options = io.SocketOptions()
        socket_options.domain = io.SocketDomain.Local
    return mqtt5.ClientOptions(
        host_name=settings.socket_path if settings.uses_socket else settings.host,
        port=0 if settings.uses_socket else settings.port,
        bootstrap=bootstrap,
        socket_options=socket_options,
        tls_ctx=tls_context(settings),
        connect_options=connect,
        session_behavior=(mqtt5.ClientSessionBehaviorType.REJOIN_ALWAYS if persistent
                          else mqtt5.ClientSessionBehaviorType.CLEAN),
        # QoS 1 publishes wait in the client across reconnects instead of failing.
        offline_queue_behavior=mqtt5.ClientOperationQueueBehaviorType.FAIL_QOS0_PUBLISH_ON_DISCONNECT,
        min_reconnect_delay_ms=int(settings.min_reconnect_delay_seconds * 1000),
        max_reconnect_delay_ms=int(settings.max_reconnect_delay_seconds * 1000),
        connack_timeout_ms=int(settings.connect_timeout_seconds * 1000),
        # Without this awscrt rewrites the username with SDK metrics and password auth fails.
        disable_metrics=True,
    )
