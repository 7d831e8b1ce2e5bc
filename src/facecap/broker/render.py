"""BrokerConfig -> mosquitto.conf text (Mosquitto 2.0). Pure: everything read from the machine (device id,
password, folders, user) is passed in, so the output is fully determined by the arguments."""

from __future__ import annotations

from ..edgelocal import SOCKET_NAME
from ..receipts import receipt_topic
from .config import BrokerConfig
from .credentials import ACL_NAME, PASSWD_NAME
from .store import STORE_NAME

PASSWORD_MASK = "********"  # noqa: S105 - what `broker render` shows instead of the password


def bridge_client_id(config: BrokerConfig, device_id: str) -> str:
    """The bridge's client id on the cloud broker. It must never change for a device: the cloud keys the
    bridge's connection state (and the operator's monitoring) on it, and a new connection of the same
    bridge replaces an old one that has not timed out yet."""
    return config.bridge.client_id or f"facecap-edge-{device_id}"


def forwards_tls(config: BrokerConfig) -> bool:
    """True when `facecap broker` does the bridge's TLS and Mosquitto bridges in plain TCP to it."""
    bridge = config.bridge
    return bridge.enabled and bridge.tls and bridge.tls_by == "facecap"


def bridge_state_topic(config: BrokerConfig, device_id: str) -> str:
    """Where Mosquitto publishes the retained bridge state: "1" connected, "0" not."""
    return f"$SYS/broker/connection/{bridge_client_id(config, device_id)}/state"


def render_conf(
    config: BrokerConfig,
    *,
    device_id: str,
    work_dir: str,
    password: str = "",
    user: str = "",
    forwarder_port: int | None = None,
) -> str:
    """The mosquitto.conf for `config`.

    device_id: the resolved device id. work_dir: the folder persistence falls back to (the component's work
    folder), which also holds the socket's folder unless local.runDir is set. password: the cloud password
    read from bridge.passwordFile (or PASSWORD_MASK for display).
    user: the account Mosquitto should keep running as (it switches to the `mosquitto` user when started
    as root without one, which then cannot write the work folder). forwarder_port: the loopback port of the
    TLS forwarder when facecap does the bridge's TLS; None shows a placeholder (`broker render`, since the
    port is picked at each start).
    """
    lines = [
        "# Rendered by `facecap broker` from the EdgeBroker configuration and rewritten at every start:",
        "# change the component configuration, not this file.",
        "",
    ]
    if user:
        lines.append(f"user {user}")
    lines += _listener(config, local_run_dir(config, work_dir))
    lines += _persistence(config, work_dir)
    lines += _limits(config)
    lines += _logging(config)
    if config.extra_config:
        lines += ["", "# extraConfig", *config.extra_config]
    if config.bridge.enabled:
        lines += _bridge(config, device_id, password, forwarder_port)
    return "\n".join(lines) + "\n"


def _limits(config: BrokerConfig) -> list[str]:
    queue = config.queue
    return [
        "",
        "# Limits. The bridge is one client: these bound the backlog an outage of the cloud link builds up.",
        f"max_queued_messages {queue.max_queued_messages}",
        f"max_queued_bytes {queue.max_queued_bytes}",
        "queue_qos0_messages false",
        # Keep this equal to the cloud broker's limit: a message the cloud refuses is dropped silently at the
        # bridge, while here a v5 publisher gets a failure reason code for it.
        f"message_size_limit {config.message_size_limit}",
        # Applies to the connections the broker accepts (the local components); in Mosquitto 2.0 the
        # bridge's own outgoing socket is not covered (the TLS forwarder sets it on the link to the cloud).
        "set_tcp_nodelay true",
    ]


def _logging(config: BrokerConfig) -> list[str]:
    return [
        "",
        # Mosquitto 2.0.11 block-buffers stdout when it is a pipe, so a log line could wait hours there;
        # stderr is unbuffered, and Greengrass writes both streams to the component log.
        "# Logs go to stderr, which Greengrass writes to the component log.",
        "log_dest stderr",
        *(f"log_type {log_type}" for log_type in config.log_types),
        "log_timestamp true",
        "log_timestamp_format %Y-%m-%dT%H:%M:%S",
        "connection_messages true",
        # $SYS figures (queued messages, drops) refresh this often; operations.md reads them.
        "sys_interval 10",
    ]


def local_run_dir(config: BrokerConfig, work_dir: str) -> str:
    """The folder of the socket and the local credentials: local.runDir, else `local` in the work folder."""
    return config.local.run_dir or f"{work_dir.rstrip('/')}/local"


def _listener(config: BrokerConfig, run_dir: str) -> list[str]:
    local = config.local
    lines = [
        "",
        "# The listeners the device's components use. No anonymous client on any of them: each component",
        "# logs in with its own identity, whose password `facecap broker` generated on this device, and the",
        "# ACL limits what it may publish and read. The bridge's local side is inside Mosquitto.",
        "per_listener_settings false",
        "allow_anonymous false",
        f"password_file {run_dir}/{PASSWD_NAME}",
        f"acl_file {run_dir}/{ACL_NAME}",
    ]
    if local.socket:
        lines += [f"# {run_dir} is 0700: only the component user can reach the socket.",
                  f"listener 0 {run_dir}/{SOCKET_NAME}"]
    if local.tcp:
        lines.append(f"listener {local.port} {local.bind_address}")
    return lines


def _persistence(config: BrokerConfig, work_dir: str) -> list[str]:
    settings = config.persistence
    if not settings.enabled:
        return ["", "persistence false"]
    folder = (settings.dir or work_dir).rstrip("/") + "/"
    if settings.autosave_after_changes:
        why = ["# Queued messages and sessions survive a restart. The store is written after autosave_interval",
               "# changes (queued, acknowledged, retained, subscribed) and at a clean stop: a power cut loses",
               "# what changed since the last save."]
        autosave = ["autosave_on_changes true", f"autosave_interval {settings.autosave_after_changes}"]
    else:
        why = ["# Queued messages and sessions survive a restart. The store is written every autosave_interval",
               "# seconds and at a clean stop: a power cut loses at most that much of what was queued."]
        autosave = ["autosave_on_changes false", f"autosave_interval {settings.autosave_interval_seconds}"]
    return ["", *why, "persistence true", f"persistence_location {folder}", f"persistence_file {STORE_NAME}",
            *autosave]


def _address(config: BrokerConfig, forwarder_port: int | None) -> list[str]:
    bridge = config.bridge
    if not forwards_tls(config):
        return [f"address {bridge.host}:{bridge.port}"]
    port = "<port picked at start>" if forwarder_port is None else str(forwarder_port)
    return [
        f"# TLS to {bridge.host}:{bridge.port} is done by `facecap broker` (bridge.tlsBy facecap): Mosquitto",
        "# bridges in plain TCP to its forwarder on loopback, which checks the cloud's certificate against",
        "# bridge.caFile (or caPath) and the host name, and presents bridge.certFile when set. Mosquitto before",
        "# 2.0.16 can hang doing a bridge's TLS itself while the uplink is down.",
        f"address 127.0.0.1:{port}",
    ]


def _bridge(config: BrokerConfig, device_id: str, password: str, forwarder_port: int | None) -> list[str]:
    bridge = config.bridge
    lines = [
        "",
        f"# Bridge to the cloud broker. Its state is retained on {bridge_state_topic(config, device_id)}.",
        f"connection {bridge.name}",
        *_address(config, forwarder_port),
        "bridge_protocol_version mqttv50",
        f"remote_clientid {bridge_client_id(config, device_id)}",
        # The local side keeps queueing for the bridge while the link is down: with local_cleansession true
        # Mosquitto would discard those messages instead. On the cloud side cleansession false is not
        # enough: Mosquitto 2.0 sends no Session Expiry Interval over MQTT 5, so the cloud ends the bridge's
        # session when the link drops (eclipse/mosquitto#1632). Receipts published meanwhile are dropped,
        # and their faces go out again after redeliverAfterSeconds (the same keys: no second object).
        "cleansession false",
        "local_cleansession false",
        "start_type automatic",
        f"restart_timeout {bridge.restart_base_seconds} {bridge.restart_cap_seconds}",
        f"keepalive_interval {bridge.keep_alive_seconds}",
        f"try_private {'true' if bridge.try_private else 'false'}",
        "notifications true",
        f"notifications_local_only {'true' if bridge.notifications_local_only else 'false'}",
    ]
    if bridge.tls and not forwards_tls(config):
        if bridge.ca_file:
            lines.append(f"bridge_cafile {bridge.ca_file}")
        else:
            lines.append(f"bridge_capath {bridge.ca_path}")
        lines.append("bridge_insecure false")
        if bridge.cert_file:
            lines += [f"bridge_certfile {bridge.cert_file}", f"bridge_keyfile {bridge.key_file}"]
    # The device id by default, so one thing-group deployment fits every device (a cloud broker that takes
    # the identity from the certificate ignores it).
    lines.append(f"remote_username {bridge.username or device_id}")
    if password:
        lines.append(f"remote_password {password}")
    lines += [f"topic {topic}" for topic in bridge.topics]
    if bridge.receipts:
        # Contract v1.1: the processor's receipts for this device's faces, which empty its outboxes. QoS 0
        # on this hop: at QoS 1 each needs the edge's PUBACK, which on a slow uplink waits behind the faces
        # in flight, and the cloud sends at most 20 unacknowledged, so receipts stalled for up to a minute
        # and the outbox sent their faces again. QoS 1 saved nothing here: a receipt in flight when the
        # bridge drops is lost either way, since the cloud keeps no session for the bridge (see above).
        lines.append(f"topic {receipt_topic(device_id)} in 0")
    return lines
