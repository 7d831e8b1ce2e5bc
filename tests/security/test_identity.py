"""Attacks on identity: a device posing as the processor or as another device, against the shipped cloud
broker. The identity on the device listener is the certificate's CN; client id and user name follow it."""

from __future__ import annotations

import json
import time
from contextlib import suppress
from datetime import datetime, timedelta, timezone

import pytest

from facecap.cli import main
from facecap.contract import format_time
from facecap.errors import MqttAuthError, MqttConnectError, PublishError
from facecap.mqtt import MqttClient
from facecap.processor.fleet import collect

from ..support.cloudbroker import CloudBroker, connect, publish
from ..support.helpers import Collector, fake_jpeg, sample_face

pytestmark = pytest.mark.integration

PROCESSOR_ID = "facecap-processor"  # the processor's default client id: known to every attacker


def publish_face(client: MqttClient, device: str, camera: str = "cam0") -> str:
    face = sample_face(device=device, camera=camera, size=500)
    future = client.publish(face.topic, face.payload, content_type=face.content_type,
                            user_properties=face.user_properties, timeout=10)
    assert future is not None
    future.result(timeout=10)
    return face.face_id


def face_ids(collector: Collector) -> list[str]:
    return [dict(m.user_properties).get("face-id", "") for m in collector.messages]


def test_device_cannot_take_over_the_processors_session_or_kick_it_off(cloud: CloudBroker) -> None:
    faces = Collector()
    processor = MqttClient(cloud.processor_settings(), PROCESSOR_ID, persistent=True, on_message=faces)
    processor.start()
    processor.subscribe("faces/#")
    processor.stop()  # away for a moment: its persistent session queues the faces
    device_b = connect(cloud.device_settings("device-b"), "device-b")
    queued = [publish_face(device_b, "device-b") for _ in range(3)]
    device_b.stop()

    # The attacker resumes "the processor's" session, then keeps reconnecting with its client id.
    stolen = Collector()
    attacker = MqttClient(cloud.device_settings("device-a"), PROCESSOR_ID, persistent=True, on_message=stolen)
    attacker.start()
    with suppress(MqttConnectError):
        attacker.subscribe("faces/#")

    processor = MqttClient(cloud.processor_settings(), PROCESSOR_ID, persistent=True, on_message=faces)
    processor.start()
    assert faces.wait_for(3), "the faces queued for the processor were taken"
    assert face_ids(faces) == queued
    for _ in range(3):
        connect(cloud.device_settings("device-a", client_id=PROCESSOR_ID), "ignored").stop()
    device_b = connect(cloud.device_settings("device-b"), "device-b")
    late = publish_face(device_b, "device-b")
    assert faces.wait_for(4) and face_ids(faces)[-1] == late
    assert processor.stats.connects == 1, "the processor was disconnected"
    assert stolen.messages == []
    # The broker renamed the attacker to its certificate's CN.
    assert "as device-a (p5, c0" in cloud.log_text()
    assert f"Client {PROCESSOR_ID} already connected" not in cloud.log_text()
    for client in (device_b, attacker, processor):
        client.stop()


def test_a_device_that_guesses_a_share_group_takes_no_face(cloud: CloudBroker) -> None:
    """Mosquitto's ACL grants any subscription, so a device may join a share group whose name it knows,
    and the faces the broker picks it for are then dropped. The processors' group is therefore a secret
    (shareGroup: 16 characters at least); guessed names join groups of their own and take nothing."""
    secret = "7c1e94b05a3f62d8"
    got = Collector()
    processors = [MqttClient(cloud.processor_settings(), f"facecap-processor-{n}", on_message=got) for n in (1, 2)]
    for processor in processors:
        processor.start()
        processor.subscribe(f"$share/{secret}/faces/#")
    stolen = Collector()
    device_a = connect(cloud.device_settings("device-a"), "device-a", on_message=stolen)
    for guess in ("processors", "facecap", "processor", "group"):
        device_a.subscribe(f"$share/{guess}/faces/#")
    device_b = connect(cloud.device_settings("device-b"), "device-b")
    sent = [publish_face(device_b, "device-b") for _ in range(20)]
    assert got.wait_for(20), f"the processors got {len(got.messages)} of 20 faces"
    assert sorted(face_ids(got)) == sorted(sent)
    assert stolen.messages == []
    for client in (device_a, device_b, *processors):
        client.stop()


def test_device_cannot_set_another_devices_bridge_state(cloud: CloudBroker) -> None:
    # Even with the other device's bridge client id, device-a is device-a.
    device_a = connect(cloud.device_settings("device-a", client_id="facecap-edge-device-b"), "device-a")
    with pytest.raises(PublishError):
        publish(device_a, "$SYS/broker/connection/facecap-edge-device-b/state", b"1", retain=True)
    # Its own state is allowed: the rule keys on the certificate, not on the client id.
    publish(device_a, "$SYS/broker/connection/facecap-edge-device-a/state", b"1", retain=True)
    device_a.stop()


def test_certificate_of_a_with_the_name_and_password_of_b_is_still_a(cloud: CloudBroker) -> None:
    faces = Collector()
    processor = connect(cloud.processor_settings(), "processor-watch", on_message=faces)
    processor.subscribe("faces/#")
    # Devices have no passwords; the processor's is the only one there is, and it changes nothing here.
    impostor = connect(cloud.device_settings(
        "device-a", username="device-b", password_file=str(cloud.secrets / "processor" / "password")), "x")
    with pytest.raises(PublishError):
        publish_face(impostor, "device-b")
    own = publish_face(impostor, "device-a")
    assert faces.wait_for(1)
    assert [m.topic for m in faces.messages] == ["faces/device-a/cam0"] and face_ids(faces) == [own]
    impostor.stop()
    processor.stop()


def test_device_certificate_with_the_processor_password_reads_no_faces(cloud: CloudBroker) -> None:
    processor_password = str(cloud.secrets / "processor" / "password")
    spy = Collector()
    intruder = connect(cloud.device_settings("device-a", username="processor", password_file=processor_password),
                       "intruder", on_message=spy)
    with suppress(MqttConnectError):  # a refused subscription is as good as one that never delivers
        intruder.subscribe("faces/#")
    with suppress(MqttConnectError):
        intruder.subscribe("$share/processors/faces/#")
    device_b = connect(cloud.device_settings("device-b"), "device-b")
    publish_face(device_b, "device-b")
    publish(device_b, "faces/device-b/cam1", fake_jpeg(200))
    time.sleep(0.5)
    assert spy.messages == []
    # Without a certificate the processor's credentials do not even open the device listener.
    with pytest.raises((MqttConnectError, MqttAuthError)):
        connect(cloud.device_settings("device-a", cert_file="", key_file="", username="processor",
                                      password_file=processor_password), "no-cert")
    device_b.stop()
    intruder.stop()


def test_processor_identity_cannot_publish_faces(cloud: CloudBroker) -> None:
    faces = Collector()
    watcher = connect(cloud.processor_settings(), "processor-watch", on_message=faces)
    watcher.subscribe("faces/#")
    writer = connect(cloud.processor_settings(), "processor-writer")
    for device in ("processor", "device-a"):
        with pytest.raises(PublishError):
            publish_face(writer, device)
    device_a = connect(cloud.device_settings("device-a"), "device-a")
    barrier = publish_face(device_a, "device-a")
    assert faces.wait_for(1)
    assert face_ids(faces) == [barrier]
    for client in (writer, watcher, device_a):
        client.stop()


def test_receipts_come_only_from_the_processor_and_reach_only_their_device(cloud: CloudBroker) -> None:
    own, spied = Collector(), Collector()
    device_a = connect(cloud.device_settings("device-a"), "device-a", on_message=own)
    device_a.subscribe("facecap/device-a/receipts")
    device_b = connect(cloud.device_settings("device-b"), "device-b", on_message=spied)
    for topic in ("facecap/device-a/receipts", "facecap/+/receipts"):
        with suppress(MqttConnectError):  # refused, or granted and never delivered
            device_b.subscribe(topic)
    # A device cannot forge receipts, for itself or another device; its health topics are its own.
    for topic in ("facecap/device-a/receipts", "facecap/device-b/receipts"):
        with pytest.raises(PublishError):
            publish(device_a, topic, b"forged")
    for topic in ("facecap/device-a/detector/status", "facecap/device-a/stats"):
        publish(device_a, topic, b"ok")
    with pytest.raises(PublishError):
        publish(device_a, "facecap/device-b/detector/status", b"forged")
    processor = connect(cloud.processor_settings(), "processor-receipts")
    publish(processor, "facecap/device-a/receipts", b"receipt")
    assert own.wait_for(1)
    time.sleep(0.5)
    assert [m.payload for m in own.messages] == [b"receipt"]
    assert spied.messages == []
    for client in (device_a, device_b, processor):
        client.stop()


def test_the_processor_identity_reads_every_devices_health_for_facecap_fleet(
        cloud: CloudBroker, capsys: pytest.CaptureFixture[str]) -> None:
    fresh = format_time(datetime.now(timezone.utc))
    old = format_time(datetime.now(timezone.utc) - timedelta(hours=1))
    device_a = connect(cloud.device_settings("device-a"), "device-a")
    device_b = connect(cloud.device_settings("device-b"), "device-b")
    retained = [
        (device_a, "facecap/device-a/detector/status", b"online"),
        (device_a, "facecap/device-a/detector/stats", json.dumps({"at": fresh, "fps": 9.5, "faces": 12,
                                                                  "published": 7, "dropped": 0}).encode()),
        (device_a, "$SYS/broker/connection/facecap-edge-device-a/state", b"1"),
        (device_b, "facecap/device-b/logger/status", b"online"),
        (device_b, "facecap/device-b/logger/stats", json.dumps({"at": old, "faces": 3}).encode()),
    ]
    try:
        for client, topic, payload in retained:
            publish(client, topic, payload, retain=True)
        view = collect(cloud.processor_settings(), settle=0.5)
        devices = {d.device: d for d in view.snapshot()}
        now = datetime.now(timezone.utc)
        assert devices["device-a"].status == {"detector": "online"} and devices["device-a"].bridge == "connected"
        assert devices["device-a"].stats["detector"]["faces"] == 12
        assert not devices["device-a"].is_stale(now, 60) and devices["device-b"].is_stale(now, 60)
        config = json.dumps({"mqtt": cloud.processor_settings().model_dump(by_alias=True, mode="json")})
        assert main(["fleet", "--config", config, "--stale-after", "60"]) == 1  # device-b is an hour late
        table = capsys.readouterr().out
        assert "device-a  ok" in table and "device-b  STALE" in table and "faces=12" in table
        assert main(["fleet", "--config", config, "--stale-after", "7200", "--json"]) == 0
        assert {d["device"] for d in json.loads(capsys.readouterr().out)} >= {"device-a", "device-b"}
    finally:
        for client, topic, _ in retained:
            publish(client, topic, b"", retain=True)  # clears the retained message
        device_a.stop()
        device_b.stop()


def test_a_removed_devices_health_can_be_forgotten_and_only_by_the_processor(
        cloud: CloudBroker, capsys: pytest.CaptureFixture[str]) -> None:
    """A removed device's retained status, stats and bridge state stayed on the broker for ever, so `facecap
    fleet` showed it STALE and exited 1 for ever after the first Jetson was retired."""
    old = format_time(datetime.now(timezone.utc) - timedelta(hours=5))
    retired = connect(cloud.device_settings("device-gone"), "device-gone")
    for topic, payload in [("facecap/device-gone/detector/status", b"offline"),
                           ("facecap/device-gone/detector/stats", json.dumps({"at": old}).encode()),
                           ("$SYS/broker/connection/facecap-edge-device-gone/state", b"0")]:
        publish(retired, topic, payload, retain=True)
    retired.stop()
    # A device cannot clear another's.
    other = connect(cloud.device_settings("device-a"), "device-a")
    with pytest.raises(PublishError):
        publish(other, "facecap/device-gone/detector/status", b"", retain=True)
    other.stop()
    config = json.dumps({"mqtt": cloud.processor_settings().model_dump(by_alias=True, mode="json")})
    assert "device-gone" in collect(cloud.processor_settings(), settle=0.5).devices
    assert main(["fleet", "--config", config, "--forget", "device-gone"]) == 0
    assert "forgot device-gone: 3 retained messages cleared" in capsys.readouterr().out
    assert "device-gone" not in collect(cloud.processor_settings(), settle=0.5).devices
    assert main(["fleet", "--config", config, "--forget", "device-gone"]) == 2  # nothing left to forget
    assert "no health of device-gone" in capsys.readouterr().err
    # A component taken out of a deployment leaves its retained "offline": the device is a FAULT until then.
    device_b = connect(cloud.device_settings("device-b"), "device-b")
    fresh = json.dumps({"at": format_time(datetime.now(timezone.utc))}).encode()
    for topic, payload in [("facecap/device-b/detector/status", b"online"), ("facecap/device-b/detector/stats", fresh),
                           ("facecap/device-b/logger/status", b"offline")]:
        publish(device_b, topic, payload, retain=True)
    try:
        assert collect(cloud.processor_settings(), settle=0.5).devices["device-b"].faults(
            datetime.now(timezone.utc), 300) == ["logger offline"]
        assert main(["fleet", "--config", config, "--forget", "device-b/logger"]) == 0
        assert "forgot device-b/logger: 2 retained messages cleared" in capsys.readouterr().out
        left = collect(cloud.processor_settings(), settle=0.5).devices["device-b"]
        assert left.status == {"detector": "online"} and left.faults(datetime.now(timezone.utc), 300) == []
    finally:
        for topic in ("facecap/device-b/detector/status", "facecap/device-b/detector/stats"):
            publish(device_b, topic, b"", retain=True)
        device_b.stop()
