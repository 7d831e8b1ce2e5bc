"""How a device component finds the EdgeBroker: `socketPath: auto` and the component's own identity."""

from __future__ import annotations

from pathlib import Path

import pytest

from facecap.edgelocal import EDGE_DIR_ENV
from facecap.errors import MqttConnectError
from facecap.mqtt import MqttSettings, check_local_paths, resolve_local

pytestmark = pytest.mark.unit


def test_auto_beside_the_edge_broker_is_its_socket_and_the_components_identity() -> None:
    resolved = resolve_local(MqttSettings(), "logger", env={EDGE_DIR_ENV: "/gg/work/com.facecap.EdgeBroker/local"})
    assert resolved.socket_path == "/gg/work/com.facecap.EdgeBroker/local/mosquitto.sock"
    assert (resolved.username, resolved.password_file) == ("logger",
                                                           "/gg/work/com.facecap.EdgeBroker/local/logger.password")
    assert resolved.describe() == "unix socket /gg/work/com.facecap.EdgeBroker/local/mosquitto.sock as logger"


def test_auto_elsewhere_is_tcp_and_explicit_settings_are_kept() -> None:
    assert not resolve_local(MqttSettings(), "detector", env={}).uses_socket
    assert resolve_local(MqttSettings(), "detector", env={}).describe() == "mqtt://127.0.0.1:1883"
    own = MqttSettings(username="me", password_file="/secret")
    kept = resolve_local(own, "detector", env={EDGE_DIR_ENV: "/run/edge"})
    assert (kept.socket_path, kept.username, kept.password_file) == ("/run/edge/mosquitto.sock", "me", "/secret")
    explicit = MqttSettings(socket_path="/elsewhere.sock")
    assert resolve_local(explicit, "detector", env={EDGE_DIR_ENV: "/run/edge"}) is explicit
    assert resolve_local(MqttSettings(socket_path=""), "detector", env={EDGE_DIR_ENV: "/run/edge"}).uses_socket is False
    for elsewhere in (MqttSettings(host="broker.example.com"), MqttSettings(tls=True)):
        assert not resolve_local(elsewhere, "detector", env={EDGE_DIR_ENV: "/run/edge"}).uses_socket


def test_socket_path_must_be_absolute() -> None:
    with pytest.raises(ValueError, match="must be an absolute path"):
        MqttSettings(socket_path="run/mosquitto.sock")


def test_a_path_that_is_not_a_socket_or_a_missing_password_is_named(tmp_path: Path) -> None:
    plain = tmp_path / "mosquitto.sock"
    plain.write_text("")
    with pytest.raises(MqttConnectError, match=f"^mqtt.socketPath: {plain}: is not a Unix socket$"):
        check_local_paths(MqttSettings(socket_path=str(plain)))
    with pytest.raises(MqttConnectError, match=f"^mqtt.passwordFile: {tmp_path}/gone: no such file$"):
        check_local_paths(MqttSettings(password_file=str(tmp_path / "gone")))
