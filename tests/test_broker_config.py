"""EdgeBroker configuration: the rendered mosquitto.conf, and every configuration error with its message."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from facecap.broker.config import BrokerConfig, without_unset_bridge
from facecap.broker.credentials import write_private
from facecap.broker.preflight import carries_faces, preflight
from facecap.broker.render import PASSWORD_MASK, bridge_state_topic, render_conf
from facecap.config import deep_merge, default_configuration, load_config
from facecap.contract import DEFAULT_MAX_PAYLOAD_BYTES
from facecap.devkit.servers import CertificateAuthority
from facecap.errors import ConfigError
from facecap.validation import check

pytestmark = pytest.mark.unit


def config(data: dict[str, Any]) -> BrokerConfig:
    return load_config(BrokerConfig, "broker", data, env={})


def render(data: dict[str, Any], **kwargs: Any) -> list[str]:
    options: dict[str, Any] = {"device_id": "jetson-1", "work_dir": "/work/folder"}
    options.update(kwargs)
    return render_conf(config(data), **options).splitlines()


def problems(data: dict[str, Any], work_dir: Path) -> dict[str, str]:
    with pytest.raises(ConfigError) as caught:
        preflight(config(data), work_dir, starting=False)
    return dict(caught.value.problems)


def config_problems(data: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(ConfigError) as caught:
        config(data)
    return dict(caught.value.problems)


# --- rendering -------------------------------------------------------------------------------------------

def test_default_bridge_is_mqtt5_persistent_tls_by_facecap_with_stable_client_id() -> None:
    lines = render({"bridge": {"host": "mqtt.example.com"}}, forwarder_port=40123)
    for expected in [
        "listener 0 /work/folder/local/mosquitto.sock",
        "allow_anonymous false",
        "password_file /work/folder/local/passwd",
        "acl_file /work/folder/local/acl",
        "persistence true",
        "persistence_location /work/folder/",
        # Every 5 minutes: each save rewrites the whole store, changed or not (docs/operations.md).
        "autosave_on_changes false",
        "autosave_interval 300",
        "set_tcp_nodelay true",
        f"message_size_limit {DEFAULT_MAX_PAYLOAD_BYTES}",
        "max_queued_messages 200000",
        f"max_queued_bytes {512 * 1024 * 1024}",
        "log_dest stderr",
        "connection cloud",
        "address 127.0.0.1:40123",
        "bridge_protocol_version mqttv50",
        "remote_clientid facecap-edge-jetson-1",
        "cleansession false",
        "local_cleansession false",
        "restart_timeout 1 10",
        "keepalive_interval 120",
        "notifications_local_only false",
        "topic faces/# out 1",
        "topic facecap/jetson-1/receipts in 0",
    ]:
        assert expected in lines, expected
    assert not any(line.startswith(("remote_password", "bridge_")) and
                   not line.startswith("bridge_protocol_version") for line in lines)
    assert "remote_username jetson-1" in lines  # the device id: one deployment fits a thing group
    # Mosquitto bridges in plain TCP to the forwarder; the conf says where TLS happens and towards what.
    assert "# TLS to mqtt.example.com:8883 is done by `facecap broker` (bridge.tlsBy facecap): Mosquitto" in lines
    # Global options must come before `connection`: after it Mosquitto reads bridge options only.
    assert lines.index("set_tcp_nodelay true") < lines.index("connection cloud")
    # The TCP listener is an option: by default the components have the socket only.
    assert [line for line in lines if line.startswith("listener")] == ["listener 0 /work/folder/local/mosquitto.sock"]


def test_tls_by_mosquitto_renders_its_own_tls_lines() -> None:
    lines = render({"bridge": {"host": "mqtt.example.com", "tlsBy": "mosquitto"}}, forwarder_port=40123)
    for expected in ["address mqtt.example.com:8883", "bridge_capath /etc/ssl/certs", "bridge_insecure false"]:
        assert expected in lines, expected
    assert not any("127.0.0.1:" in line or "facecap broker` (bridge.tlsBy" in line for line in lines)


def test_render_without_a_forwarder_port_shows_where_it_goes() -> None:
    """`broker render` runs no forwarder: the port is picked at start and shown as such."""
    lines = render({"bridge": {"host": "mqtt.example.com", "username": "u", "passwordFile": "/pw"}},
                   password=PASSWORD_MASK)
    assert "address 127.0.0.1:<port picked at start>" in lines
    assert "remote_password ********" in lines


def test_tls_by_facecap_keeps_the_password_and_drops_every_tls_line() -> None:
    lines = render({"bridge": {"host": "10.0.0.5", "port": 18883, "caFile": "/certs/ca.pem",
                               "certFile": "/certs/dev.crt", "keyFile": "/certs/dev.key", "username": "jetson-1",
                               "passwordFile": "/secrets/pw"}}, password="s3cret", forwarder_port=41000)
    assert "address 127.0.0.1:41000" in lines
    # The MQTT CONNECT inside the tunnel still carries the credentials.
    assert "remote_username jetson-1" in lines
    assert "remote_password s3cret" in lines
    assert not any(line.startswith(("bridge_cafile", "bridge_capath", "bridge_certfile", "bridge_keyfile",
                                    "bridge_insecure", "address 10.0.0.5")) for line in lines)
    assert any("10.0.0.5:18883" in line for line in lines if line.startswith("#"))


def test_certificates_credentials_and_overrides_are_rendered() -> None:
    lines = render({
        "deviceId": "ignored-here",
        "local": {"port": 1884, "tcp": True, "socket": False, "runDir": "/run/facecap"},
        "bridge": {"host": "10.0.0.5", "port": 18883, "tlsBy": "mosquitto", "caFile": "/certs/ca.pem",
                   "certFile": "/certs/dev.crt",
                   "keyFile": "/certs/dev.key", "username": "jetson-1", "passwordFile": "/secrets/pw",
                   "clientId": "edge-7", "topics": ["faces/# out 1", "commands/# in 1"],
                   "keepAliveSeconds": 30, "restartBaseSeconds": 5, "restartCapSeconds": 120},
        "persistence": {"dir": "/var/lib/facecap/", "autosaveAfterChanges": 0, "autosaveIntervalSeconds": 15},
        "queue": {"maxQueuedMessages": 10, "maxQueuedBytes": 2048},
        "messageSizeLimit": 4096,
        "extraConfig": ["max_inflight_messages 40"],
    }, password="s3cret word")
    for expected in [
        "listener 1884 127.0.0.1", "allow_anonymous false", "password_file /run/facecap/passwd",
        "address 10.0.0.5:18883", "remote_clientid edge-7", "bridge_cafile /certs/ca.pem",
        "bridge_certfile /certs/dev.crt", "bridge_keyfile /certs/dev.key", "remote_username jetson-1",
        "remote_password s3cret word", "topic faces/# out 1", "topic commands/# in 1", "keepalive_interval 30",
        "restart_timeout 5 120", "persistence_location /var/lib/facecap/", "autosave_on_changes false",
        "autosave_interval 15", "max_queued_messages 10", "max_queued_bytes 2048", "message_size_limit 4096",
        "max_inflight_messages 40",
    ]:
        assert expected in lines, expected
    assert not any(line.startswith("bridge_capath") for line in lines)
    assert [line for line in lines if line.startswith("listener")] == ["listener 1884 127.0.0.1"]
    assert lines.index("max_inflight_messages 40") < lines.index("connection cloud")


def test_masked_password_and_the_state_topic() -> None:
    lines = render({"bridge": {"host": "h", "username": "u", "passwordFile": "/pw"}}, password=PASSWORD_MASK)
    assert "remote_password ********" in lines
    assert bridge_state_topic(config({}), "jetson-1") == "$SYS/broker/connection/facecap-edge-jetson-1/state"


def test_receipts_are_bridged_in_unless_turned_off() -> None:
    assert "topic facecap/jetson-1/receipts in 0" in render({"bridge": {"host": "h"}})
    lines = render({"bridge": {"host": "h", "receipts": False}})
    assert not any("receipts" in line for line in lines)
    assert "topic faces/# out 1" in lines


def test_without_bridge_or_persistence_and_as_a_given_user() -> None:
    lines = render({"bridge": {"enabled": False}, "persistence": {"enabled": False}}, user="ggc_user")
    assert "user ggc_user" in lines
    assert "persistence false" in lines
    assert not any(line.startswith(("connection ", "address ", "persistence_location ")) for line in lines)


@pytest.mark.parametrize("tls_by", ["facecap", "mosquitto"])
def test_plaintext_bridge_has_no_tls_lines_and_no_forwarder(tls_by: str) -> None:
    lines = render({"bridge": {"host": "127.0.0.1", "port": 1999, "tls": False, "tlsBy": tls_by}},
                   forwarder_port=40123)
    assert "address 127.0.0.1:1999" in lines
    assert not any(line.startswith(("bridge_cafile", "bridge_capath", "bridge_insecure")) for line in lines)


def test_defaults_make_a_valid_recipe_configuration() -> None:
    defaults = default_configuration(BrokerConfig)
    # Faces and the components' health go out; nothing else (receipts come in on facecap/<id>/receipts).
    assert defaults["bridge"]["topics"] == ["faces/# out 1", "facecap/+/+/status out 1", "facecap/+/+/stats out 1"]
    assert defaults["messageSizeLimit"] == DEFAULT_MAX_PAYLOAD_BYTES
    assert config(defaults) == config({})


def test_environment_overrides_one_key() -> None:
    loaded = load_config(BrokerConfig, "broker", {"bridge": {"host": "a"}},
                         env={"FACECAP_BRIDGE__HOST": "b.example.com", "FACECAP_LOCAL__PORT": "1999"})
    assert loaded.bridge.host == "b.example.com"
    assert loaded.local.port == 1999


# --- configuration errors (shape) ------------------------------------------------------------------------

def test_a_value_with_a_line_break_cannot_inject_a_directive() -> None:
    found = config_problems({"bridge": {"username": "jetson\nbridge_insecure true"}})
    assert "line breaks" in found["bridge.username"]
    found = config_problems({"extraConfig": ["ok 1", "bad\nline"]})
    assert "line breaks" in found["extraConfig"]


@pytest.mark.parametrize(("data", "key", "words"), [
    ({"bridge": {"topics": ["faces/# sideways 1"]}}, "bridge.topics", "direction must be one of out, in, both"),
    ({"bridge": {"host": "cloud..example.com"}}, "bridge.host", "not a valid host name"),
    ({"bridge": {"topics": ["faces/# out 3"]}}, "bridge.topics", "qos must be 0, 1 or 2"),
    ({"bridge": {"topics": []}}, "bridge.topics", "at least 1"),
    ({"bridge": {"host": "mqtt.example.com:8883"}}, "bridge.host", "without port"),
    ({"bridge": {"certFile": "/c.crt"}}, "bridge", "certFile and keyFile go together"),
    ({"bridge": {"passwordFile": "/pw"}}, "bridge", "passwordFile needs a username"),
    ({"bridge": {"restartBaseSeconds": 90}}, "bridge", "must not exceed restartCapSeconds"),
    ({"bridge": {"clientId": "has space"}}, "bridge.clientId", "at most 128 of the characters"),
    ({"bridge": {"port": 0}}, "bridge.port", "greater than or equal to 1"),
    ({"messageSizeLimit": 300_000_000}, "messageSizeLimit", "less than or equal to 268435455"),
    ({"logTypes": ["chatty"]}, "logTypes", "unknown log types"),
    ({"bridge": {"hots": "x"}}, "bridge.hots", "unknown key"),
    ({"bridge": {"tlsBy": "openssl"}}, "bridge.tlsBy", "'facecap' or 'mosquitto'"),
    ({"persistence": {"dir": " /x"}}, "persistence.dir", "blanks"),
])
def test_bad_values_name_the_key(data: dict[str, Any], key: str, words: str) -> None:
    found = config_problems(data)
    assert key in found, found
    assert words in found[key]


# --- configuration errors (this machine) -----------------------------------------------------------------

def test_no_cloud_host_is_a_local_only_broker_and_a_warning(tmp_path: Path) -> None:
    """Deploying the bundle before the cloud is set up must not leave the broker BROKEN: it runs without its
    bridge. validate-config and the Greengrass validation say so in a warning, never an error."""
    as_run = without_unset_bridge(config({}))
    assert as_run.bridge.enabled is False
    assert without_unset_bridge(config({"bridge": {"host": "h.example.com"}})).bridge.enabled is True
    # Without a bridge there is no CA to find or TLS to insist on: the preflight has nothing to say.
    preflight(as_run, tmp_path, starting=False)
    for strict in (False, True):
        found = check("broker", {}, strict)
        assert [(p.key, p.severity) for p in found] == [("bridge.host", "warning")]
        assert "local-only" in found[0].reason


def test_missing_certificate_ca_and_password_files_are_each_named(tmp_path: Path) -> None:
    found = problems({"bridge": {"host": "mqtt.example.com", "caFile": str(tmp_path / "ca.pem"),
                                 "certFile": str(tmp_path / "dev.crt"), "keyFile": str(tmp_path / "dev.key"),
                                 "username": "u", "passwordFile": str(tmp_path / "pw")}}, tmp_path)
    assert found == {
        "bridge.caFile": f"CA file {tmp_path / 'ca.pem'} does not exist",
        "bridge.certFile": f"certificate {tmp_path / 'dev.crt'} does not exist",
        "bridge.keyFile": f"private key {tmp_path / 'dev.key'} does not exist",
        "bridge.passwordFile": f"password file {tmp_path / 'pw'} does not exist",
    }


def test_missing_ca_folder_without_ca_file(tmp_path: Path) -> None:
    found = problems({"bridge": {"host": "mqtt.example.com", "caPath": str(tmp_path / "none")}}, tmp_path)
    assert "does not exist; set bridge.caFile" in found["bridge.caPath"]


def test_empty_or_padded_password(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("\n")
    found = problems({"bridge": {"host": "h", "username": "u", "passwordFile": str(secret)}}, tmp_path)
    assert found["bridge.passwordFile"] == f"{secret} is empty"
    secret.write_text(" padded\n")
    found = problems({"bridge": {"host": "h", "username": "u", "passwordFile": str(secret)}}, tmp_path)
    assert "must not begin or end with blanks" in found["bridge.passwordFile"]


def test_tls_off_towards_the_network_needs_an_explicit_opt_out(tmp_path: Path) -> None:
    found = problems({"bridge": {"host": "mqtt.example.com", "tls": False}}, tmp_path)
    assert "TLS is off towards mqtt.example.com" in found["bridge.tls"]
    assert "bridge.allowPlaintext true" in found["bridge.tls"]
    # Loopback never leaves the machine, and an explicit opt-out is respected.
    for bridge in ({"host": "127.0.0.1", "tls": False}, {"host": "localhost", "tls": False},
                   {"host": "mqtt.example.com", "tls": False, "allowPlaintext": True}):
        preflight(config({"bridge": bridge}), tmp_path, starting=False)


def test_client_certificate_without_tls(tmp_path: Path) -> None:
    cert = tmp_path / "c.crt"
    cert.write_text("x")
    found = problems({"bridge": {"host": "127.0.0.1", "tls": False, "certFile": str(cert),
                                 "keyFile": str(cert)}}, tmp_path)
    assert found == {"bridge.certFile": "a client certificate needs bridge.tls true"}


def test_no_anonymous_switch_and_some_listener_is_required(tmp_path: Path) -> None:
    # The old opt-out for anonymous clients is gone: an unknown key now.
    assert "local.allowAnonymousOnNetwork" in config_problems({"local": {"allowAnonymousOnNetwork": True}})
    assert "no way in" in config_problems({"local": {"socket": False, "tcp": False}})["local"]
    lines = render({"bridge": {"enabled": False}, "local": {"tcp": True, "bindAddress": "0.0.0.0"}})  # noqa: S104
    assert "allow_anonymous false" in lines
    assert "listener 1883 0.0.0.0" in lines


def test_a_blank_in_the_socket_path_and_a_broker_already_running_are_refused(tmp_path: Path) -> None:
    """Mosquitto 2.0 cuts a listener's path at its first blank, making (and at exit removing) a socket
    outside the run folder; and a second broker in one folder would take over the first one's socket."""
    bridge_off: dict[str, Any] = {"bridge": {"enabled": False}}
    spaced = tmp_path / "my broker" / "local"
    found = problems({**bridge_off, "local": {"runDir": str(spaced)}}, tmp_path)
    assert found == {"local.runDir": f"the socket path {spaced}/mosquitto.sock contains a blank, which Mosquitto "
                                     "cuts it at; choose a runDir without blanks"}
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as first:
        first.bind(str(run_dir / "mosquitto.sock"))
        first.listen(1)
        preflight(config({**bridge_off, "local": {"runDir": str(run_dir)}}), tmp_path, starting=False)  # render
        with pytest.raises(ConfigError, match=r"a broker already listens on .*another EdgeBroker runs"):
            preflight(config({**bridge_off, "local": {"runDir": str(run_dir)}}), tmp_path, starting=True)


@pytest.mark.parametrize(("data", "carried"), [
    ({}, True),
    ({"topicPrefix": "site1/faces"}, False),  # the default topics carry faces/# only
    ({"topicPrefix": "site1/faces", "bridge": {"topics": ["site1/faces/# out 1"]}}, True),
    ({"topicPrefix": "site1/faces", "bridge": {"topics": ["# out 1 site1/faces/ cloud/"]}}, True),  # local prefix
    ({"bridge": {"topics": ["faces/# in 1"]}}, False),
    ({"deviceId": "dev1", "bridge": {"topics": ["faces/dev1/+ out 1"]}}, True),
    ({"deviceId": "dev2", "bridge": {"topics": ["faces/dev1/+ out 1"]}}, False),
    ({"bridge": {"topics": ["faces/+ out 1"]}}, False),  # one level short of <device>/<camera>
])
def test_the_bridge_must_carry_the_faces(data: dict[str, Any], carried: bool, tmp_path: Path) -> None:
    data = deep_merge({"bridge": {"host": "127.0.0.1", "tls": False}}, data)
    assert carries_faces(config(data)) is carried
    found = problems(data, tmp_path) if not carried else {}
    assert ("bridge.topics" in found) is not carried


def test_run_folder_rules(tmp_path: Path) -> None:
    bridge_off: dict[str, Any] = {"bridge": {"enabled": False}}
    too_long = tmp_path / ("x" * 100)
    found = problems({**bridge_off, "local": {"runDir": str(too_long)}}, tmp_path)
    assert found["local.runDir"].startswith(f"the socket path {too_long}/mosquitto.sock is longer than 107 bytes")
    assert "absolute path" in problems({**bridge_off, "local": {"runDir": "relative/run"}}, tmp_path)["local.runDir"]
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    assert problems({**bridge_off, "local": {"runDir": str(a_file)}}, tmp_path) == {
        "local.runDir": f"{a_file} is not a folder"}
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    os.chown(foreign, 65534, 65534)
    assert "belongs to uid 65534" in problems({**bridge_off, "local": {"runDir": str(foreign)}}, tmp_path)[
        "local.runDir"]
    # The TCP port is only checked when the TCP listener is on.
    preflight(config({**bridge_off, "local": {"runDir": str(tmp_path / "run")}}), tmp_path, starting=False)


def test_missing_mosquitto_and_persistence_folder(tmp_path: Path) -> None:
    found = problems({"bridge": {"enabled": False}, "mosquittoPath": str(tmp_path / "mosquitto"),
                      "persistence": {"dir": str(tmp_path / "absent")}}, tmp_path)
    assert "no mosquitto binary" in found["mosquittoPath"]
    assert "apt-get install mosquitto" in found["mosquittoPath"]
    assert found["persistence.dir"] == f"{tmp_path / 'absent'} does not exist"
    # When the broker really starts, the folder is made instead.
    with pytest.raises(ConfigError):
        preflight(config({"bridge": {"enabled": False}, "mosquittoPath": str(tmp_path / "mosquitto"),
                          "persistence": {"dir": str(tmp_path / "made")}}), tmp_path)
    assert (tmp_path / "made").is_dir()


def test_conf_is_written_owner_only_even_over_a_wider_file(tmp_path: Path) -> None:
    target = tmp_path / "mosquitto.conf"
    target.write_text("old")
    target.chmod(0o644)
    write_private(target, "remote_password secret\n")
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert target.read_text() == "remote_password secret\n"
    assert os.listdir(tmp_path) == ["mosquitto.conf"]


def test_an_autosave_interval_the_changes_mode_ignores_is_named() -> None:
    """With autosaveAfterChanges on, the clock is not used: a deployment that sets both is told which wins."""
    assert config({}).persistence.unused_interval() is None
    assert config({"persistence": {"autosaveIntervalSeconds": 15}}).persistence.unused_interval() is None
    assert config({"persistence": {"autosaveAfterChanges": 100}}).persistence.unused_interval() is None
    assert config({"persistence": {"enabled": False, "autosaveAfterChanges": 100, "autosaveIntervalSeconds": 15}}
                  ).persistence.unused_interval() is None
    assert config({"persistence": {"autosaveAfterChanges": 100, "autosaveIntervalSeconds": 15}}
                  ).persistence.unused_interval() == (
        "15 has no effect: the store is saved after persistence.autosaveAfterChanges (100) changes; set that to 0 "
        "to save on the clock")
    # validate-config says so before a deployment, as a warning (the broker logs it at start).
    result = subprocess.run([sys.executable, "-m", "facecap.cli", "validate-config", "broker", json.dumps(
        {"bridge": {"enabled": False}, "persistence": {"autosaveAfterChanges": 100, "autosaveIntervalSeconds": 15}})],
        capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert ("warning: persistence.autosaveIntervalSeconds: 15 has no effect: the store is saved after "
            "persistence.autosaveAfterChanges (100) changes") in result.stderr


def test_validate_config_warns_of_a_certificate_issued_for_another_device(ca: CertificateAuthority) -> None:
    """The cloud broker takes the id from the certificate: validate-config says so before a deployment (as a
    warning: it does not know the cloud broker), and says nothing when they match or no id is known."""
    device = ca.issue("jetson-07")
    without_thing_name = {k: v for k, v in os.environ.items() if k != "AWS_IOT_THING_NAME"}

    def warnings(device_id: str, env: dict[str, str] | None = None) -> list[str]:
        section = {"host": "cloud.example.com", "caFile": str(ca.cert), "certFile": str(device.cert),
                   "keyFile": str(device.key)}
        data = {"bridge": section, **({"deviceId": device_id} if device_id else {})}
        result = subprocess.run([sys.executable, "-m", "facecap.cli", "validate-config", "broker", json.dumps(data)],
                                capture_output=True, text=True, check=False,
                                env={**without_thing_name, **(env or {})})
        assert result.returncode == 0, result.stderr
        prefix = "facecap validate-config: warning: bridge.certFile: "
        return [line.removeprefix(prefix) for line in result.stderr.splitlines() if line.startswith(prefix)]

    assert warnings("jetson-7") == [
        f"this device's certificate {device.cert} is for CN=jetson-07, but its device "
        "id is jetson-7 (deviceId, by default the Greengrass thing name). facecap's cloud broker takes a device's "
        "id from its certificate and refuses faces under any other id, so with it none would be stored: issue the "
        "certificate for jetson-7 (cloud/scripts/add-device.sh jetson-7) or set deviceId to jetson-07. (A broker "
        "that takes the id from elsewhere does not mind.)"]
    assert warnings("jetson-07") == []
    assert warnings("") == []  # no deviceId and no thing name: nothing to compare
    assert len(warnings("", {"AWS_IOT_THING_NAME": "jetson-8"})) == 1  # the thing name is the device id
