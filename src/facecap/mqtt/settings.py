"""How to reach a broker (`MqttSettings`, the `mqtt` key of every component's configuration) and the TLS
context built from it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field, model_validator

from ..config import NO_CONTROL, NO_SPACE, ConfigModel, KeepAliveSeconds, Port, WaitSeconds
from ..errors import MqttConnectError

if TYPE_CHECKING:
    from awscrt import io

AUTO_SOCKET = "auto"
# The session expiry awscrt takes (a C integer: beyond it the client would raise at start).
_UINT32_MAX = 2**32 - 1


class MqttSettings(ConfigModel):
    """How to reach a broker. Shared by every component's configuration under the key `mqtt`."""

    socket_path: str = Field(
        AUTO_SOCKET,
        description="Unix socket of the broker; when set, host, port and TLS are not used. `auto`: the "
                    "EdgeBroker's socket and this component's own identity when it runs beside it under "
                    "Greengrass (FACECAP_EDGE_BROKER_DIR, set by the recipes) and host is loopback without "
                    "TLS, else host:port. Empty: host:port.")
    host: str = Field("127.0.0.1", min_length=1, pattern=NO_SPACE, description="Broker host name or address.")
    port: Port = Field(1883, description="Broker port (8883 is the usual TLS port).")
    tls: bool = Field(False, description="Connect with TLS.")
    ca_file: str = Field("", description="PEM file of the CA that signed the broker's certificate (TLS).")
    cert_file: str = Field("", description="PEM client certificate for mutual TLS (optional).")
    key_file: str = Field("", description="PEM private key of the client certificate.")
    username: str = Field("", description="User name for password authentication (optional).")
    password_file: str = Field("", description="File whose first line is the password; keeps it out of configs.")
    client_id: str = Field("", max_length=256, pattern=NO_CONTROL,
                           description="Client id; empty derives one from the device id and component.")
    keep_alive_seconds: KeepAliveSeconds = Field(60, description="MQTT keep-alive interval.")
    session_expiry_seconds: int = Field(
        7 * 24 * 3600, ge=0, le=_UINT32_MAX,
        description="How long the broker keeps a persistent session while disconnected."
    )
    max_in_flight: int = Field(256, ge=1, le=65535, description="Publishes awaiting PUBACK at most.")
    connect_timeout_seconds: WaitSeconds = Field(15.0,
                                           description="How long a start waits for the first CONNACK.")
    min_reconnect_delay_seconds: WaitSeconds = Field(0.5,
                                               description="First reconnect delay (backoff start).")
    max_reconnect_delay_seconds: WaitSeconds = Field(30.0, description="Reconnect backoff ceiling.")

    @model_validator(mode="before")
    @classmethod
    def _no_password(cls, data: Any) -> Any:
        # A password in the configuration would sit in the deployment document and in an environment variable.
        if isinstance(data, dict) and "password" in data:
            raise ValueError("password is not a configuration key: write the password to a file only the "
                             "component can read and set passwordFile")
        return data

    @model_validator(mode="after")
    def _check_files(self) -> MqttSettings:
        if (self.cert_file == "") != (self.key_file == ""):
            raise ValueError("certFile and keyFile go together")
        if self.socket_path not in ("", AUTO_SOCKET) and not self.socket_path.startswith("/"):
            raise ValueError(f"socketPath {self.socket_path!r} must be an absolute path, 'auto' or empty")
        return self

    @property
    def uses_socket(self) -> bool:
        """True when the client connects to a Unix socket (an `auto` left unresolved means TCP)."""
        return self.socket_path not in ("", AUTO_SOCKET)

    def read_password(self) -> str:
        if self.password_file:
            lines = Path(self.password_file).read_text(encoding="utf-8").splitlines()
            return lines[0] if lines else ""
        return ""

    def describe(self) -> str:
        """Where we connect, for logs; never includes the password."""
        auth = f" as {self.username}" if self.username else ""
        if self.uses_socket:
            return f"unix socket {self.socket_path}{auth}"
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}{auth}"


def tls_context(settings: MqttSettings) -> io.ClientTlsContext | None:
    if not settings.tls or settings.uses_socket:
        return None
    from awscrt import io  # here, not above: reading settings needs no native library

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
