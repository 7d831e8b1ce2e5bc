"""The EdgeBroker configuration: what `facecap broker` turns into a mosquitto.conf.

Only the shape of each value is checked here, so the defaults stay valid and a recipe's
DefaultConfiguration can be generated from them. Whether the broker can actually start (a cloud host is
set, the files exist, TLS is on towards the internet) is checked by `preflight` just before it runs.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from ..config import (
    CLIENT_ID,
    NO_CONTROL,
    NO_SPACE,
    ConfigModel,
    DeviceConfig,
    KeepAliveSeconds,
    LoggingSettings,
    Port,
    TopicConfig,
)
from ..contract import DEFAULT_MAX_PAYLOAD_BYTES

# mosquitto.conf is read line by line and a value runs to the end of its line, so a value with a line
# break could smuggle in a directive of its own: every text value is refused any control character.
_NO_CONTROL = re.compile(NO_CONTROL)
_NO_SPACE = re.compile(NO_SPACE)
_CONNECTION_NAME = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_DIRECTIONS = ("out", "in", "both")
# The MQTT limit on a payload; Mosquitto refuses a larger message_size_limit.
MQTT_MAX_PAYLOAD = 268_435_455
LOG_TYPES = ("error", "warning", "notice", "information", "subscribe", "unsubscribe", "websockets", "debug",
             "all")


def _text(value: str, what: str = "the value") -> str:
    if not _NO_CONTROL.fullmatch(value):
        raise ValueError(f"{what} must not contain line breaks or other control characters")
    if value != value.strip():
        raise ValueError(f"{what} must not begin or end with blanks (mosquitto.conf trims them)")
    return value


def check_bridge_topic(line: str) -> str:
    """A Mosquitto bridge `topic` line: `pattern [out|in|both [qos [local-prefix remote-prefix]]]`."""
    _text(line, f"topic {line!r}")
    parts = line.split()
    if not 1 <= len(parts) <= 5 or len(parts) == 4:
        raise ValueError(f"topic {line!r} must be 'pattern [out|in|both [qos [local-prefix remote-prefix]]]'")
    if len(parts) > 1 and parts[1] not in _DIRECTIONS:
        raise ValueError(f"topic {line!r}: direction must be one of {', '.join(_DIRECTIONS)}")
    if len(parts) > 2 and parts[2] not in ("0", "1", "2"):
        raise ValueError(f"topic {line!r}: qos must be 0, 1 or 2")
    return line


class LocalListener(ConfigModel):
    """How the device's own components reach the broker: a Unix socket by default, TCP as an option.

    Both listeners refuse anonymous clients: every local client logs in with an identity whose password
    the broker generates on the device (see `credentials`), and an ACL limits each identity's topics."""

    socket: bool = Field(
        True, description="Listen on the Unix socket <runDir>/mosquitto.sock (the detector, the logger and "
                          "`facecap send` use it by default on the device).")
    run_dir: str = Field(
        "", description="Folder of the socket and the local credentials (mode 0700, only the component user "
                        "can enter it); empty is `local` in the work folder, which is where the other "
                        "components look (FACECAP_EDGE_BROKER_DIR in their recipes).")
    tcp: bool = Field(
        False, description="Also listen on bindAddress:port over TCP, for tools such as mosquitto_sub; it "
                           "asks for the same credentials as the socket.")
    bind_address: str = Field(
        "127.0.0.1", pattern=NO_SPACE,
        description="Address of the TCP listener (when tcp is true); loopback keeps the broker off the network.")
    port: Port = Field(1883, description="Port of the TCP listener (when tcp is true).")

    @field_validator("run_dir")
    @classmethod
    def _plain_text(cls, value: str) -> str:
        return _text(value)

    @model_validator(mode="after")
    def _some_listener(self) -> LocalListener:
        if not self.socket and not self.tcp:
            raise ValueError("socket and tcp are both false: the components would have no way in")
        return self


class BridgeSettings(ConfigModel):
    """The bridge to the cloud broker."""

    enabled: bool = Field(True, description="Bridge to the cloud broker; false runs a local-only broker.")
    name: str = Field("cloud", pattern=_CONNECTION_NAME.pattern,
                      description="Bridge connection name, shown in the broker log.")
    host: str = Field("", description="Cloud broker host name or IPv4 address. Empty: the broker runs "
                                      "local-only (with a warning) until a deployment sets it.")
    port: Port = Field(8883, description="Cloud broker port.")
    tls: bool = Field(True, description="Connect to the cloud broker with TLS.")
    tls_by: Literal["facecap", "mosquitto"] = Field(
        "facecap",
        description="Who does the bridge's TLS. facecap: Mosquitto bridges in plain TCP to a loopback port of "
                    "`facecap broker`, which carries the connection to the cloud inside TLS, because Mosquitto "
                    "before 2.0.16 (2.0.11 in Debian 12 and Ubuntu 22.04) can hang at 100% CPU, deaf to its "
                    "own clients, after failed TLS bridge reconnects. mosquitto: Mosquitto's own TLS, fine "
                    "from Mosquitto 2.0.16 on.")
    allow_plaintext: bool = Field(
        False, description="Explicit opt-out: allow tls false towards a non-loopback host (faces would cross "
                           "the network unencrypted).")
    ca_file: str = Field(
        "", description="PEM file of the CA that signed the cloud broker's certificate; empty trusts the "
                        "system store in caPath.")
    ca_path: str = Field(
        "/etc/ssl/certs",
        description="Folder of trusted CA certificates (the system store), used when caFile is empty.")
    cert_file: str = Field("", description="PEM client certificate for mutual TLS (optional).")
    key_file: str = Field("", description="PEM private key of certFile.")
    username: str = Field("", description="User name on the cloud broker; empty sends the device id (the thing "
                                          "name), so one deployment fits a whole thing group.")
    password_file: str = Field("", description="File whose first line is the cloud password; the password is "
                                               "written into the 0600 mosquitto.conf in the work folder.")
    client_id: str = Field("", pattern=CLIENT_ID,
                           description="Client id on the cloud broker; empty means facecap-edge-<deviceId>, "
                                       "stable so the cloud's connection state of the device keeps its name.")
    # Faces, and the components' health (retained status and stats) so the cloud sees each device
    # (`facecap fleet`). Not facecap/<id>/# out: receipts come in on facecap/<id>/receipts.
    topics: list[str] = Field(["faces/# out 1", "facecap/+/+/status out 1", "facecap/+/+/stats out 1"],
                              min_length=1,
                              description="Bridge topic lines: 'pattern [out|in|both [qos [local remote]]]'.")
    receipts: bool = Field(
        True, description="Also bridge `facecap/<deviceId>/receipts in 0`: the cloud's receipts (contract v1.1), "
                          "which empty the producers' outboxes. QoS 0 on this hop, so a receipt does not wait "
                          "behind faces on a slow uplink for its PUBACK.")
    keep_alive_seconds: KeepAliveSeconds = Field(
        120,
        description="MQTT keep-alive of the bridge (Mosquitto's keepalive_interval). Mosquitto queues its ping "
                    "behind the faces it has already sent, so on a slow uplink the answer takes as long as the "
                    "link needs to carry them (up to outbox.maxUnconfirmed faces a producer: 256 of 30 KB take "
                    "120 s at 512 kbit/s), and a shorter "
                    "keep-alive cuts a live link again and again. With tlsBy mosquitto it is also how a silent "
                    "uplink is noticed (after 1 to 2 keep-alives); with tlsBy facecap `deadLinkSeconds` "
                    "notices it sooner.")
    dead_link_seconds: int = Field(
        20, ge=5, le=3600,
        description="With tlsBy facecap: how long data sent to the cloud may wait with no acknowledgement at "
                    "all (the forwarder watches the socket's TCP state), or an idle link leave keepalive probes "
                    "unanswered, before the connection counts as dead and is made afresh; so a cut without RST "
                    "is noticed within about this many seconds. A slow or lossy link that still acknowledges "
                    "is not cut.")
    restart_base_seconds: int = Field(1, ge=1, description="First reconnect delay after the bridge drops.")
    restart_cap_seconds: int = Field(
        10, ge=1, description="Reconnect backoff ceiling (with jitter). With tlsBy facecap an attempt on a dead "
                              "uplink keeps probing it for up to 15 s, so faces flow again within seconds of "
                              "the link's return.")
    certificate_warning_days: int = Field(
        30, ge=0, le=3650,
        description="Warn in the log, once a day, from this many days before this device's certificate "
                    "(certFile), a CA in caFile or, with tlsBy facecap, the cloud broker's certificate "
                    "expires; an error once it has. 0: no such warnings.")
    notifications_local_only: bool = Field(
        False, description="Publish the bridge state ($SYS/broker/connection/<clientId>/state) only on the "
                           "edge broker. By default the cloud broker gets it too, retained, with a last will "
                           "of 0, so the cloud sees which devices are connected.")
    try_private: bool = Field(True, description="Tell a Mosquitto cloud broker this is a bridge (loop "
                                                "detection); set false for brokers that reject it.")

    @field_validator("ca_file", "ca_path", "cert_file", "key_file", "username", "password_file")
    @classmethod
    def _plain_text(cls, value: str) -> str:
        return _text(value)

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        # Mosquitto's `address host:port` splits at the first colon, so an IPv6 literal cannot be written.
        if not _NO_SPACE.fullmatch(value) or ":" in value:
            raise ValueError("must be a host name or IPv4 address, without port or blanks (the port is "
                             "bridge.port; for IPv6 use a DNS name)")
        try:
            value.encode("idna")  # what the resolver will do with it (an empty label, one over 63 characters)
        except UnicodeError:
            raise ValueError(f"{value!r} is not a valid host name (an empty label, or one over 63 "
                             "characters)") from None
        return value

    @field_validator("topics")
    @classmethod
    def _topics(cls, topics: list[str]) -> list[str]:
        return [check_bridge_topic(t) for t in topics]

    @model_validator(mode="after")
    def _consistent(self) -> BridgeSettings:
        if (self.cert_file == "") != (self.key_file == ""):
            raise ValueError("certFile and keyFile go together")
        if self.restart_base_seconds > self.restart_cap_seconds:
            raise ValueError("restartBaseSeconds must not exceed restartCapSeconds")
        if self.password_file and not self.username:
            raise ValueError("passwordFile needs a username")
        return self


class PersistenceSettings(ConfigModel):
    enabled: bool = Field(True, description="Keep queued messages and sessions on disk across restarts.")
    dir: str = Field("", description="Folder of mosquitto.db; empty is the working folder, which Greengrass "
                                     "makes the component's work folder.")
    autosave_interval_seconds: int = Field(
        300, ge=0,
        description="Seconds between saves of the in-memory store (a clean stop always saves). Each save rewrites "
                    "the whole store, changed or not: while the uplink is down the outbox's 256 faces (about 8 MB) "
                    "wait in it, which at 60 s (the default before) wrote 11 GB of flash a day, at 300 s 2.2 GB. "
                    "A power cut loses at most this much of the queue; the outbox keeps the detector's faces "
                    "either way. 0 saves only at stop.")
    autosave_after_changes: int = Field(
        0, ge=0,
        description="Instead of the clock, save once this many changes have gathered: messages queued for a "
                    "client, each acknowledgement of a delivered one (by the cloud or a local subscriber), "
                    "retained messages, subscriptions, persistent-session connects. A store that does not change "
                    "is then not written at all (an idle outage costs almost nothing), but every face that flows "
                    "counts two or three times, so a slow uplink carrying faces all day, or a backlog draining, "
                    "saves far more often than the clock (bench/flash_writes.py). 0: use the clock.")

    def unused_interval(self) -> str | None:
        """Why autosaveIntervalSeconds, set to other than its default, has no effect; None when it has."""
        default = type(self).model_fields["autosave_interval_seconds"].default
        if not self.enabled or not self.autosave_after_changes or self.autosave_interval_seconds == default:
            return None
        return (f"{self.autosave_interval_seconds} has no effect: the store is saved after "
                f"persistence.autosaveAfterChanges ({self.autosave_after_changes}) changes; set that to 0 to save "
                "on the clock")

    @field_validator("dir")
    @classmethod
    def _plain_text(cls, value: str) -> str:
        return _text(value)


class QueueLimits(ConfigModel):
    """Per-client limits on queued QoS 1 messages; the bridge is one client, so they bound the backlog an
    outage of the cloud link can build up. Beyond them Mosquitto drops new messages (and logs it)."""

    max_queued_messages: int = Field(200_000, ge=0, description="Messages queued per client; 0 is unlimited.")
    max_queued_bytes: int = Field(
        512 * 1024 * 1024, ge=0, description="Payload bytes queued per client (in memory and on disk); 0 is "
                                             "unlimited.")


class BrokerConfig(TopicConfig, DeviceConfig):
    """Configuration of `facecap broker`, the EdgeBroker component."""

    # Mosquitto rereads these on SIGHUP (mosquitto.conf(5): "Reloaded on reload signal"); the listener, the
    # persistence location and the bridge are read only at its start.
    live_keys = ("queue", "messageSizeLimit", "logTypes", "logging")

    mosquitto_path: str = Field("", description="The mosquitto binary; empty searches PATH and /usr/sbin.")
    local: LocalListener = Field(default_factory=LocalListener)
    bridge: BridgeSettings = Field(default_factory=BridgeSettings)
    persistence: PersistenceSettings = Field(default_factory=PersistenceSettings)
    queue: QueueLimits = Field(default_factory=QueueLimits)
    message_size_limit: int = Field(
        DEFAULT_MAX_PAYLOAD_BYTES, ge=1, le=MQTT_MAX_PAYLOAD,
        description="Largest payload accepted, in bytes. Must not exceed the cloud broker's limit: a message "
                    "the cloud refuses is dropped at the bridge without a trace.")
    log_types: list[str] = Field(
        ["error", "warning", "notice", "information"],
        description="Mosquitto log_type lines (written to stderr, the component log).")
    extra_config: list[str] = Field([], description="Extra global mosquitto.conf lines, appended verbatim.")
    logging: LoggingSettings = Field(default_factory=LoggingSettings)

    @field_validator("mosquitto_path")
    @classmethod
    def _plain_text(cls, value: str) -> str:
        return _text(value)

    @field_validator("log_types")
    @classmethod
    def _log_types(cls, values: list[str]) -> list[str]:
        unknown = [v for v in values if v not in LOG_TYPES]
        if unknown:
            raise ValueError(f"unknown log types {unknown}; known: {', '.join(LOG_TYPES)}")
        return values

    @field_validator("extra_config")
    @classmethod
    def _extra(cls, lines: list[str]) -> list[str]:
        return [_text(line, f"line {line!r}") for line in lines]


def without_unset_bridge(config: BrokerConfig) -> BrokerConfig:
    """The configuration to run: with the bridge on but no cloud host, a local-only broker. Deploying the
    bundle before the cloud is set up must not leave the broker BROKEN and the components that depend on it
    waiting for ever; the faces stay on the device until a deployment sets bridge.host."""
    if not config.bridge.enabled or config.bridge.host:
        return config
    return config.model_copy(update={"bridge": config.bridge.model_copy(update={"enabled": False})})
