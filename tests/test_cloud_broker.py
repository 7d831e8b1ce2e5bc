"""The cloud broker as deployed (tests/support/cloudbroker.py): cloud/mosquitto/ config and ACLs with secrets from
cloud/scripts/, on real Mosquitto. The attacks of one device on another are in tests/security/."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from contextlib import suppress
from datetime import datetime, timezone
from pathlib import Path

import pytest

from facecap.contract import DEFAULT_MAX_PAYLOAD_BYTES, FaceMetadata, build_message
from facecap.devkit.servers import LOOPBACK
from facecap.errors import MqttAuthError, MqttConnectError, PublishError
from facecap.mqtt import MqttClient

from .support.cloudbroker import QUICK_RETRIES, CloudBroker, cloud_broker_running, connect, publish, run_script
from .support.edgebroker import EdgeBroker
from .support.helpers import Collector, fake_jpeg, sample_face

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cloud_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CloudBroker]:
    with cloud_broker_running(tmp_path_factory.mktemp("cloud-broker"),
                              ("device-a", "device-b", "device-gone")) as broker:
        yield broker


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


def test_processor_listener_refuses_anonymous_clients_and_wrong_passwords(cloud_broker: CloudBroker,
                                                                       tmp_path: Path) -> None:
    with pytest.raises(MqttAuthError):
        connect(cloud_broker.processor_settings(username="", password_file=""), "anonymous")
    wrong = tmp_path / "wrong"
    wrong.write_text("not-the-password\n")
    with pytest.raises(MqttAuthError):
        connect(cloud_broker.processor_settings(password_file=str(wrong)), "wrong")


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
    run_script("remove-device.sh", "device-gone", secrets=cloud_broker.secrets)
    cloud_broker.reload()
    # The revoked certificate fails the TLS handshake: there is no MQTT answer at all.
    with pytest.raises(MqttConnectError):
        connect(cloud_broker.device_settings("device-gone"), "device-gone")


def bridge_with_files_of(cloud_broker: CloudBroker, device: str) -> dict[str, object]:
    """The EdgeBroker's bridge section with exactly the three files add-device.sh handed out for `device`."""
    folder = cloud_broker.device_files(device)
    return {"host": LOOPBACK, "port": cloud_broker.device_port, "tls": True, "caFile": str(folder / "ca.crt"),
            "certFile": str(folder / "client.crt"), "keyFile": str(folder / "client.key"),
            "restartBaseSeconds": 1, "restartCapSeconds": 2}


def test_edge_broker_bridges_in_with_the_files_add_device_printed(cloud_broker: CloudBroker,
                                                                    processor_feed: Collector,
                                                                    tmp_path: Path) -> None:
    """The real EdgeBroker (`facecap broker`) of device-b, configured with exactly the three files
    add-device.sh hands out, bridges into the cloud config; the largest face crosses intact."""
    edge = EdgeBroker(tmp_path / "edge", bridge_with_files_of(cloud_broker, "device-b"), device_id="device-b").start()
    try:
        assert edge.wait_bridge_state("1"), edge.log_tail()
        local = MqttClient(edge.settings("detector", False, **QUICK_RETRIES), "edge-detector")
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


def test_an_edge_broker_with_another_devices_certificate_says_so_and_its_faces_go_nowhere(
        cloud_broker: CloudBroker, processor_feed: Collector, tmp_path: Path) -> None:
    """device-b's files on a device whose id is device-c (files copied from the wrong folder, or a typo in
    add-device.sh): the bridge comes up, and behind it the cloud refuses every face. The start says why."""
    folder = cloud_broker.device_files("device-b")
    edge = EdgeBroker(tmp_path / "edge", bridge_with_files_of(cloud_broker, "device-b"), device_id="device-c").start()
    try:
        assert edge.wait_for_log(f"WARNING facecap.broker.runner: bridge.certFile: this device's certificate "
                                 f"{folder / 'client.crt'} is for CN=device-b, but its device id is device-c "
                                 "(deviceId, by default the Greengrass thing name)"), edge.log_tail()
        assert "cloud/scripts/add-device.sh device-c) or set deviceId to device-b." in edge.log_text()
        assert edge.wait_bridge_state("1"), edge.log_tail()  # nothing else looks wrong
        local = MqttClient(edge.settings("detector", False, **QUICK_RETRIES), "edge-detector-c")
        local.start()
        face = sample_face(device="device-c")
        future = local.publish(face.topic, face.payload, user_properties=face.user_properties, timeout=10)
        assert future is not None
        future.result(timeout=20)  # the edge took it ...
        assert not processor_feed.wait_for(1, timeout=5)  # ... and the cloud refused it (faces/%u/# is device-b's)
        local.stop()
    finally:
        edge.stop()


def test_processor_identity_reads_the_broker_counters_and_devices_do_not(cloud_broker: CloudBroker) -> None:
    """docs/operations.md reads $SYS/broker/... as the processor; a device must not see them."""
    counters, spied = Collector(), Collector()
    operator = connect(cloud_broker.processor_settings(), "operator", on_message=counters)
    operator.subscribe("$SYS/broker/clients/connected")
    device = connect(cloud_broker.device_settings("device-a"), "device-a", on_message=spied)
    with suppress(MqttConnectError):
        device.subscribe("$SYS/broker/clients/connected")
    assert counters.wait_for(1, timeout=15)  # Mosquitto publishes $SYS every 10 s by default
    assert counters.messages[0].payload.isdigit()
    time.sleep(0.5)
    assert spied.messages == []
    operator.stop()
    device.stop()
