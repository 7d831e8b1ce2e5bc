"""The cloud broker as deployed, for tests: cloud/mosquitto/ config and ACLs with secrets made by
cloud/scripts/, on real Mosquitto. Only what cannot run here is changed: ports become free loopback ports
and container paths become the test's folders. The log stays on stderr, as in the container, and the
broker's output goes to a file, as Docker collects it: reload() reads it while the broker runs, so a log
destination that holds lines back (stdout is block-buffered without a terminal) fails the tests that
reload."""

from __future__ import annotations

import getpass
import os
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from facecap.devkit.servers import LOOPBACK, free_port, stop_process, wait_for_port
from facecap.mqtt import MqttClient, MqttSettings

from ..conftest import REPO, require_binary

CLOUD = REPO / "cloud"
SCRIPTS = CLOUD / "scripts"
DEVICE_PORT = 8883
PROCESSOR_PORT = 8884
QUICK_RETRIES: dict[str, object] = {"connect_timeout_seconds": 5, "min_reconnect_delay_seconds": 0.2,
                                    "max_reconnect_delay_seconds": 1}


def run_script(name: str, *args: str, secrets: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FACECAP_SECRETS": str(secrets)}
    result = subprocess.run([str(SCRIPTS / name), *args], env=env, capture_output=True, text=True,
                            check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"{name} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def render_for_loopback(conf: str, *, secrets: Path, data: Path, ports: dict[int, int]) -> str:
    """The deployed mosquitto.conf with only its environment changed. Every rewrite must find its target,
    so a change to the real file cannot silently leave the test running something else."""
    replacements = {
        "/mosquitto/secrets/": f"{secrets}/",
        "/mosquitto/config/": f"{CLOUD / 'mosquitto'}/",
        "/mosquitto/data/": f"{data}/",
    }
    for container_port, port in ports.items():
        replacements[f"listener {container_port}\n"] = f"listener {port} {LOOPBACK}\n"
    for old, new in replacements.items():
        assert old in conf, f"cloud/mosquitto/mosquitto.conf no longer contains {old!r}"
        conf = conf.replace(old, new)
    settings = [line for line in conf.splitlines() if not line.lstrip().startswith("#")]
    assert "log_dest stderr" in settings, "the broker's log is expected on stderr (docker compose logs)"
    unmapped = [line for line in settings if any(word.startswith("/mosquitto/") for word in line.split())]
    assert not unmapped, f"container paths left unmapped: {unmapped}"
    # Started as root, Mosquitto would switch to the `mosquitto` user, which cannot read the test's folders.
    return conf + f"\nuser {getpass.getuser()}\n"


@dataclass
class CloudBroker:
    secrets: Path
    device_port: int
    processor_port: int
    process: subprocess.Popen[bytes]
    log: Path

    def reload(self) -> None:
        """What `docker compose kill -s HUP broker` does: re-read the password file, the ACLs and the CRL."""
        mark = self.log.stat().st_size
        self.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            with open(self.log, "rb") as log:
                log.seek(mark)
                if b"Reloading config" in log.read():
                    time.sleep(0.2)  # the line comes first, the reload right after it
                    return
            time.sleep(0.05)
        raise AssertionError("the broker did not log its reload")

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def device_files(self, device: str) -> Path:
        return self.secrets / "devices" / device

    def device_settings(self, device: str, **overrides: object) -> MqttSettings:
        """A device as add-device.sh sets it up: the CA, its certificate and key, nothing else."""
        folder = self.device_files(device)
        values: dict[str, object] = {
            "host": LOOPBACK, "port": self.device_port, "tls": True, "ca_file": str(folder / "ca.crt"),
            "cert_file": str(folder / "client.crt"), "key_file": str(folder / "client.key"),
            **QUICK_RETRIES,
        }
        values.update(overrides)
        return MqttSettings(**values)

    def processor_settings(self, **overrides: object) -> MqttSettings:
        folder = self.secrets / "processor"
        values: dict[str, object] = {
            "host": LOOPBACK, "port": self.processor_port, "tls": True, "ca_file": str(folder / "ca.crt"),
            "username": "processor", "password_file": str(folder / "password"),
            **QUICK_RETRIES,
        }
        values.update(overrides)
        return MqttSettings(**values)


@contextmanager
def cloud_broker_running(root: Path, devices: Iterable[str]) -> Iterator[CloudBroker]:
    """init-broker.sh --make-ca, add-device.sh for each device, then the shipped configuration on loopback."""
    require_binary("mosquitto_passwd", "apt-get install mosquitto")
    require_binary("openssl", "apt-get install openssl")
    secrets = root / "secrets"
    # The devices reach the broker at 127.0.0.1 here, as they would at the Elastic IP on EC2.
    run_script("init-broker.sh", "--make-ca", "127.0.0.1", "localhost", secrets=secrets)
    for device in devices:
        run_script("add-device.sh", device, secrets=secrets)
    with shipped_broker_running(root, secrets) as broker:
        yield broker


@contextmanager
def shipped_broker_running(root: Path, secrets: Path) -> Iterator[CloudBroker]:
    """The shipped configuration on loopback with the broker secrets already in secrets/broker/ (what
    `docker compose up` or `restart` starts with); its data and log go to root."""
    binary = require_binary("mosquitto", "apt-get install mosquitto")
    data = root / "data"
    data.mkdir(parents=True)
    log = root / "mosquitto.log"
    ports = {DEVICE_PORT: free_port(), PROCESSOR_PORT: free_port()}
    conf = render_for_loopback((CLOUD / "mosquitto" / "mosquitto.conf").read_text(),
                               secrets=secrets / "broker", data=data, ports=ports)
    conf_path = root / "mosquitto.conf"
    conf_path.write_text(conf)
    # Both streams into one file, as `docker compose logs` shows them.
    with open(log, "ab") as out:
        process = subprocess.Popen([binary, "-c", str(conf_path)], stdout=out, stderr=out)
    try:
        for port in ports.values():
            wait_for_port(port, process, 10, log)
        yield CloudBroker(secrets, ports[DEVICE_PORT], ports[PROCESSOR_PORT], process, log)
    finally:
        stop_process(process)


def connect(settings: MqttSettings, name: str, **kwargs: object) -> MqttClient:
    client = MqttClient(settings, f"{name}-{time.monotonic_ns()}", **kwargs)  # type: ignore[arg-type]
    client.start()
    return client


def publish(client: MqttClient, topic: str, payload: bytes, **kwargs: object) -> None:
    future = client.publish(topic, payload, timeout=10, **kwargs)  # type: ignore[arg-type]
    assert future is not None
    future.result(timeout=10)


# MQTT 3.1.1 CONNECT, clean session, client id "probe", no credentials (the device listener takes the
# certificate's CN as both).
_PROBE_CONNECT = b"\x10\x11\x00\x04MQTT\x04\x02\x00\x3c\x00\x05probe"


def tls_refusal(settings: MqttSettings) -> str | None:
    """Connect with settings' CA, certificate and key and send an MQTT CONNECT: None when the broker accepts
    it (CONNACK 0), else how it refused (the TLS alert, such as "certificate revoked"). Unlike connect(),
    which raises the same error whether the broker refused the certificate or was slow, this names the
    reason, and it takes milliseconds instead of the client's connect timeout.
    TLS 1.2, which the listener accepts beside 1.3: there the server checks the client's certificate inside
    the handshake and its alert is the next thing the client reads. With TLS 1.3 the check comes after the
    client's side of the handshake, and the alert can be lost to the reset that follows it."""
    context = ssl.create_default_context(cafile=settings.ca_file)
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(settings.cert_file, settings.key_file)
    try:
        with socket.create_connection((settings.host, settings.port), timeout=10) as raw, \
                context.wrap_socket(raw, server_hostname=settings.host) as tls:
            tls.sendall(_PROBE_CONNECT)
            answer = tls.recv(4)
    except (ssl.SSLError, ConnectionResetError) as error:
        return str(error)
    if answer[:1] != b"\x20":
        return f"no CONNACK: {answer!r}"
    return None if answer[3:4] == b"\x00" else f"CONNACK return code {answer[3]}"
