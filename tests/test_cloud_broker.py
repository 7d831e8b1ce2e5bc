"""The cloud broker as deployed: cloud/mosquitto/ config and ACL with secrets from cloud/scripts/, on real
Mosquitto. Only what cannot run here is changed: ports become free loopback ports, container paths become
the test's folders, and the log goes to a file."""

from __future__ import annotations

import getpass
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pytest

from facecap.contract import DEFAULT_MAX_PAYLOAD_BYTES, FaceMetadata, build_message
from facecap.devkit.servers import LOOPBACK, free_port, stop_process, wait_for_port
from facecap.errors import MqttAuthError, MqttConnectError, PublishError
from facecap.mqtt import MqttClient, MqttSettings

from .conftest import REPO, require_binary
from .support.edgebroker import EdgeBroker
from .support.helpers import Collector, fake_jpeg, sample_face

pytestmark = pytest.mark.integration

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


def render_for_loopback(conf: str, *, secrets: Path, acl: Path, data: Path, ports: dict[int, int],
                        log: Path) -> str:
    """The deployed mosquitto.conf with only its environment changed. Every rewrite must find its target,
    so a change to the real file cannot silently leave the test running something else."""
    replacements = {
        "/mosquitto/secrets/": f"{secrets}/",
        "/mosquitto/config/acl": str(acl),
        "/mosquitto/data/": f"{data}/",
        "log_dest stdout": f"log_dest file {log}",
    }
    for container_port, port in ports.items():
        replacements[f"listener {container_port}\n"] = f"listener {port} {LOOPBACK}\n"
    for old, new in replacements.items():
        assert old in conf, f"cloud/mosquitto/mosquitto.conf no longer contains {old!r}"
        conf = conf.replace(old, new)
    settings = [line for line in conf.splitlines() if not line.lstrip().startswith("#")]
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
        """What `docker compose kill -s HUP broker` does: re-read the password file and the ACL."""
        self.process.send_signal(signal.SIGHUP)
        time.sleep(0.5)

    def device_settings(self, device: str, **overrides: object) -> MqttSettings:
        folder = self.secrets / "devices" / device
        values: dict[str, object] = {
            "host": LOOPBACK, "port": self.device_port, "tls": True, "ca_file": str(folder / "ca.crt"),
            "cert_file": str(folder / "client.crt"), "key_file": str(folder / "client.key"),
            "username": device, "password_file": str(folder / "password"),
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


@pytest.fixture(scope="module")
def cloud_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CloudBroker]:
    binary = require_binary("mosquitto", "apt-get install mosquitto")
    require_binary("mosquitto_passwd", "apt-get install mosquitto")
    require_binary("openssl", "apt-get install openssl")
    root = tmp_path_factory.mktemp("cloud-broker")
    secrets = root / "secrets"
    # The devices reach the broker at 127.0.0.1 here, as they would at the Elastic IP on EC2.
    run_script("init-broker.sh", "127.0.0.1", "localhost", secrets=secrets)
    for device in ("device-a", "device-b", "device-gone"):
        run_script("add-device.sh", device, secrets=secrets)
    data = root / "data"
    data.mkdir()
    log = root / "mosquitto.log"
    ports = {DEVICE_PORT: free_port(), PROCESSOR_PORT: free_port()}
    conf = render_for_loopback((CLOUD / "mosquitto" / "mosquitto.conf").read_text(),
                               secrets=secrets / "broker", acl=CLOUD / "mosquitto" / "acl", data=data,
                               ports=ports, log=log)
    conf_path = root / "mosquitto.conf"
    conf_path.write_text(conf)
    with open(root / "stdout.log", "ab") as out:
        process = subprocess.Popen([binary, "-c", str(conf_path)], stdout=out, stderr=out)
    try:
        for port in ports.values():
            wait_for_port(port, process, 10, log)
        yield CloudBroker(secrets, ports[DEVICE_PORT], ports[PROCESSOR_PORT], process, log)
    finally:
        stop_process(process)


@pytest.fixture
def processor_feed(cloud_broker: CloudBroker) -> Iterator[Collector]:
    """The processor identity subscribed to every face, as the processor does."""
    collector = Collector()
    client = MqttClient(cloud_broker.processor_settings(), f"processor-test-{time.monotonic_ns()}",
                        on_message=collector)
    client.start()
    client.subscribe("faces/#")
    yield collector
    client.stop()


def connect(settings: MqttSettings, name: str) -> MqttClient:
    client = MqttClient(settings, f"{name}-{time.monotonic_ns()}")
    client.start()
    return client


def publish(client: MqttClient, topic: str, payload: bytes) -> None:
    future = client.publish(topic, payload, timeout=10)
    assert future is not None
    future.result(timeout=10)


def topics_received(collector: Collector) -> set[str]:
    return {m.topic for m in collector.messages}


def test_device_publishes_under_its_own_id_only(cloud_broker: CloudBroker, processor_feed: Collector) -> None:
    device_a = connect(cloud_broker.device_settings("device-a"), "device-a")
    publish(device_a, "faces/device-a/cam0", fake_jpeg(2000))
    # Another device's topic: Mosquitto answers an MQTT 5 publisher with "not authorized" and drops it.
    with pytest.raises(PublishError):
        publish(device_a, "faces/device-b/cam0", fake_jpeg(2000))
    with pytest.raises(PublishError):
        publish(device_a, "faces/device-a-evil/cam0", fake_jpeg(2000))
    # A last message on the allowed topic: once it arrived, anything published before it has too.
    publish(device_a, "faces/device-a/barrier", fake_jpeg(100))
    assert processor_feed.wait_for(2)
    time.sleep(0.3)
    assert topics_received(processor_feed) == {"faces/device-a/cam0", "faces/device-a/barrier"}
    device_a.stop()

    device_b = connect(cloud_broker.device_settings("device-b"), "device-b")
    publish(device_b, "faces/device-b/cam0", fake_jpeg(2000))
    assert processor_feed.wait_for(3)
    assert "faces/device-b/cam0" in topics_received(processor_feed)
    device_b.stop()


def test_face_message_with_properties_arrives_intact(cloud_broker: CloudBroker,
                                                     processor_feed: Collector) -> None:
    face = sample_face(device="device-a", size=30_000)
    device = connect(cloud_broker.device_settings("device-a"), "device-a")
    future = device.publish(face.topic, face.payload, content_type=face.content_type,
                            user_properties=face.user_properties, timeout=10)
    assert future is not None
    future.result(timeout=10)
    assert processor_feed.wait_for(1)
    message = processor_feed.messages[0]
    assert (message.topic, message.payload, message.content_type) == (face.topic, face.payload, "image/jpeg")
    assert message.user_properties == face.user_properties
    device.stop()


def test_largest_face_the_edge_accepts_passes_the_cloud_broker(cloud_broker: CloudBroker,
                                                               processor_feed: Collector) -> None:
    meta = FaceMetadata(device_id="device-a", camera_id="cam-with-a-long-name-" + "x" * 40,
                        captured_at=datetime.now(timezone.utc), bbox=(1, 2, 3, 4), score=0.9, frame=7,
                        track_id="track-" + "7" * 50, detector="yunet")
    face = build_message(fake_jpeg(DEFAULT_MAX_PAYLOAD_BYTES), meta)
    device = connect(cloud_broker.device_settings("device-a"), "device-a")
    future = device.publish(face.topic, face.payload, content_type=face.content_type,
                            user_properties=face.user_properties, timeout=10)
    assert future is not None
    future.result(timeout=20)
    assert processor_feed.wait_for(1, timeout=20)
    assert len(processor_feed.messages[0].payload) == DEFAULT_MAX_PAYLOAD_BYTES
    device.stop()


def test_processor_reads_through_a_shared_subscription(cloud_broker: CloudBroker) -> None:
    collector = Collector()
    processor = MqttClient(cloud_broker.processor_settings(), f"processor-shared-{time.monotonic_ns()}",
                           on_message=collector)
    processor.start()
    processor.subscribe("$share/processors/faces/#")
    device = connect(cloud_broker.device_settings("device-b"), "device-b")
    publish(device, "faces/device-b/cam1", fake_jpeg(500))
    assert collector.wait_for(1)
    assert collector.messages[0].topic == "faces/device-b/cam1"
    device.stop()
    processor.stop()


def test_processor_identity_cannot_publish_faces(cloud_broker: CloudBroker,
                                                 processor_feed: Collector) -> None:
    processor = connect(cloud_broker.processor_settings(), "processor-writer")
    with pytest.raises(PublishError):
        publish(processor, "faces/device-a/cam0", fake_jpeg(100))
    processor.stop()
    time.sleep(0.3)
    assert processor_feed.messages == []


def test_device_cannot_read_other_devices_faces(cloud_broker: CloudBroker) -> None:
    spy = Collector()
    device_a = MqttClient(cloud_broker.device_settings("device-a"), f"device-a-spy-{time.monotonic_ns()}",
                          on_message=spy)
    device_a.start()
    with suppress(MqttConnectError):  # a refused subscription is as good as one that never delivers
        device_a.subscribe("faces/#")
    device_b = connect(cloud_broker.device_settings("device-b"), "device-b")
    publish(device_b, "faces/device-b/cam0", fake_jpeg(500))
    time.sleep(0.5)
    assert spy.messages == []
    device_a.stop()
    device_b.stop()


@pytest.mark.parametrize("listener", ["device", "processor"])
def test_anonymous_clients_are_refused(cloud_broker: CloudBroker, listener: str) -> None:
    no_credentials: dict[str, object] = {"username": "", "password_file": ""}
    settings = (cloud_broker.device_settings("device-a", **no_credentials) if listener == "device"
                else cloud_broker.processor_settings(**no_credentials))
    with pytest.raises(MqttAuthError):
        connect(settings, "anonymous")


def test_wrong_password_is_refused(cloud_broker: CloudBroker, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong"
    wrong.write_text("not-the-password\n")
    with pytest.raises(MqttAuthError):
        connect(cloud_broker.device_settings("device-a", password_file=str(wrong)), "wrong")


def test_device_password_with_another_devices_name_is_refused(cloud_broker: CloudBroker) -> None:
    password_of_a = str(cloud_broker.secrets / "devices/device-a/password")
    settings = cloud_broker.device_settings("device-a", username="device-b", password_file=password_of_a)
    with pytest.raises(MqttAuthError):
        connect(settings, "impostor")


def test_device_listener_requires_a_client_certificate(cloud_broker: CloudBroker) -> None:
    settings = cloud_broker.device_settings("device-a", cert_file="", key_file="")
    with pytest.raises(MqttConnectError):
        connect(settings, "no-certificate")


def test_certificate_from_another_ca_is_refused(cloud_broker: CloudBroker, tmp_path: Path) -> None:
    other = tmp_path / "other"
    run_script("make-ca.sh", secrets=other)
    run_script("make-device-cert.sh", "device-a", secrets=other)
    folder = other / "devices" / "device-a"
    settings = cloud_broker.device_settings("device-a", cert_file=str(folder / "client.crt"),
                                            key_file=str(folder / "client.key"))
    with pytest.raises(MqttConnectError):
        connect(settings, "foreign-certificate")


def mqtt_connect_packet(client_id: str) -> bytes:
    """An MQTT 3.1.1 CONNECT with a clean session and no credentials."""
    body = b"\x00\x04MQTT\x04\x02\x00\x3c" + len(client_id).to_bytes(2, "big") + client_id.encode()
    return bytes([0x10, len(body)]) + body


@pytest.mark.parametrize("listener", ["device", "processor"])
def test_plain_mqtt_without_tls_gets_no_answer(cloud_broker: CloudBroker, listener: str) -> None:
    port = cloud_broker.device_port if listener == "device" else cloud_broker.processor_port
    with socket.create_connection((LOOPBACK, port), timeout=5) as sock:
        sock.sendall(mqtt_connect_packet("plain"))
        try:
            answer = sock.recv(16)
        except (ConnectionResetError, TimeoutError):
            answer = b""
    # A broker speaking MQTT would answer with CONNACK (0x20); a TLS listener answers with an alert or closes.
    assert not answer.startswith(b"\x20")


def test_removed_device_is_refused_after_reload(cloud_broker: CloudBroker) -> None:
    connect(cloud_broker.device_settings("device-gone"), "device-gone").stop()
    saved_password = cloud_broker.secrets / "saved-password"
    saved_password.write_text((cloud_broker.secrets / "devices/device-gone/password").read_text())
    run_script("remove-device.sh", "device-gone", secrets=cloud_broker.secrets)
    cloud_broker.reload()
    with pytest.raises(MqttAuthError):
        connect(cloud_broker.device_settings("device-gone", password_file=str(saved_password)), "device-gone")
    assert "device-gone" not in (cloud_broker.secrets / "broker/passwd").read_text()


def test_edge_broker_bridges_in_with_the_files_add_device_printed(cloud_broker: CloudBroker,
                                                                    processor_feed: Collector,
                                                                    tmp_path: Path) -> None:
    """The real EdgeBroker (`facecap broker`) of device-b, configured with exactly the four files
    add-device.sh hands out, bridges into the cloud config; the largest face crosses intact."""
    folder = cloud_broker.secrets / "devices" / "device-b"
    bridge = {"host": LOOPBACK, "port": cloud_broker.device_port, "tls": True,
              "caFile": str(folder / "ca.crt"), "certFile": str(folder / "client.crt"),
              "keyFile": str(folder / "client.key"), "username": "device-b",
              "passwordFile": str(folder / "password"), "restartBaseSeconds": 1, "restartCapSeconds": 2}
    edge = EdgeBroker(tmp_path / "edge", bridge, device_id="device-b").start()
    try:
        assert edge.wait_bridge_state("1"), edge.log_tail()
        local = MqttClient(MqttSettings(host=edge.host, port=edge.port, **QUICK_RETRIES), "edge-detector")
        local.start()
        face = sample_face(device="device-b", size=DEFAULT_MAX_PAYLOAD_BYTES)
        future = local.publish(face.topic, face.payload, content_type=face.content_type,
                               user_properties=face.user_properties, timeout=10)
        assert future is not None
        future.result(timeout=20)
        assert processor_feed.wait_for(1, timeout=30), edge.log_tail()
        message = processor_feed.messages[0]
        assert (message.topic, message.payload) == (face.topic, face.payload)
        assert message.user_properties == face.user_properties
        local.stop()
    finally:
        edge.stop()
