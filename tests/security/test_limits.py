"""What one device can do to the processor through the shipped cloud broker: retained faces, huge property
values, a flood above its ceiling, and ids that would make unsafe file names. The processor is the real one,
storing into a file store."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from facecap.devkit.servers import LOOPBACK
from facecap.mqtt import MqttClient
from facecap.polling import wait_until

from ..support.cloudbroker import CloudBroker, connect, publish
from ..support.helpers import fake_jpeg, publish_all, sample_face
from ..support.processor import running
from .conftest import processor_config, stored_files
from .rawmqtt import publish_raw

pytestmark = pytest.mark.integration


def publish_face(client: MqttClient, device: str, camera: str = "cam0", retain: bool = False) -> None:
    face = sample_face(device=device, camera=camera, size=500)
    future = client.publish(face.topic, face.payload, content_type=face.content_type,
                            user_properties=face.user_properties, retain=retain, timeout=10)
    assert future is not None
    future.result(timeout=10)


def quarantined(store: Path, reason: str) -> list[Path]:
    return [p for p in stored_files(store / "quarantine") if f"/{reason}/" in str(p)]


def faces_of(store: Path, device: str) -> list[Path]:
    return stored_files(store / device)


def test_retained_faces_are_stored_once_and_never_again(cloud: CloudBroker, tmp_path: Path) -> None:
    store = tmp_path / "store"
    device = connect(cloud.device_settings("device-a"), "device-a")
    with running(processor_config(cloud, store, "facecap-processor-retained-1")) as processor:
        publish_face(device, "device-a", camera="retained", retain=True)
        publish(device, "faces/device-a/junk", b"not an image", retain=True)
        assert wait_until(lambda: processor.stats.stored + processor.stats.quarantined == 2, 20)
    assert len(faces_of(store, "device-a")) == 1 and len(stored_files(store / "quarantine")) == 1
    before = {p: p.stat().st_mtime_ns for p in stored_files(store)}
    # A new subscription gets the retained copies again: the processor drops them.
    with running(processor_config(cloud, store, "facecap-processor-retained-2")) as processor:
        assert wait_until(lambda: processor.stats.ignored == 2, 20)
        publish_face(device, "device-a", camera="barrier")
        assert wait_until(lambda: processor.stats.stored == 1, 20)
        assert processor.stats.quarantined == 0 and processor.guard.retained["device-a"] == 2
    after = {p: p.stat().st_mtime_ns for p in stored_files(store)}
    assert len(after) == len(before) + 1 and all(after[p] == t for p, t in before.items())
    for topic in ("faces/device-a/retained", "faces/device-a/junk"):  # tidy the shared broker
        publish(device, topic, b"", retain=True)
    device.stop()


def test_a_megabyte_of_properties_is_quarantined_and_logged_in_200_characters(
        cloud: CloudBroker, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = tmp_path / "store"
    caplog.set_level(logging.INFO, logger="facecap")
    device = connect(cloud.device_settings("device-a"), "device-a")
    face = sample_face(device="device-a", size=500)
    # An MQTT string holds at most 65,535 bytes: the largest face-id there can be, and 15 more such values.
    huge = [(n, "F" * 65_000 if n == "face-id" else v) for n, v in face.user_properties]
    huge += [(f"x-{i}", "v" * 65_000) for i in range(15)]
    with running(processor_config(cloud, store, "facecap-processor-huge")) as processor:
        future = device.publish(face.topic, face.payload, content_type=face.content_type,
                                user_properties=tuple(huge), timeout=10)
        assert future is not None
        future.result(timeout=10)
        assert wait_until(lambda: processor.stats.quarantined == 1, 20)
    assert len(quarantined(store, "bad-face-id")) == 1  # kept whole for a look, not lost
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("facecap.processor")]
    warning = [line for line in lines if "quarantined" in line]
    assert warning and "F" * 50 in warning[0]
    assert max(len(line) for line in lines) < 600, max(lines, key=len)[:300]
    device.stop()


def test_a_noisy_device_is_quarantined_above_its_ceiling_and_the_others_pass(cloud: CloudBroker,
                                                                            tmp_path: Path) -> None:
    store = tmp_path / "store"
    noisy = connect(cloud.device_settings("device-a"), "device-a")
    quiet = connect(cloud.device_settings("device-b"), "device-b")
    ceiling = 5  # faces/s; the default is 50, low here so that a short flood is enough
    config = processor_config(cloud, store, "facecap-processor-rate", maxFacesPerSecondPerDevice=ceiling,
                              rateBurstFaces=10)
    with running(config) as processor:
        started = time.monotonic()
        publish_all(noisy, [sample_face(device="device-a", size=500, frame=i) for i in range(60)])
        publish_all(quiet, [sample_face(device="device-b", size=500, frame=i) for i in range(5)])
        assert wait_until(lambda: processor.stats.stored + processor.stats.quarantined == 65, 20)
        elapsed = time.monotonic() - started
        assert processor.guard.faces["device-a"] == 60 and processor.guard.faces["device-b"] == 5
        assert "device-a=60" in processor.guard.summary()
    assert len(faces_of(store, "device-b")) == 5
    allowed = len(faces_of(store, "device-a"))
    # The burst (rateBurstFaces) plus what the bucket refilled while the flood lasted.
    assert 10 <= allowed <= 10 + ceiling * elapsed + 1
    assert len(quarantined(store, "rate")) == 60 - allowed
    noisy.stop()
    quiet.stop()


@pytest.mark.parametrize("topic", ["faces/device-a/cam0\n", "faces/device-a\n/cam0", "faces/device-a/cam\r0",
                                   "faces/device-a/cam\x1b0", "faces/device-a/cam\x000"])
def test_control_characters_in_topics_are_refused_by_the_broker(cloud: CloudBroker, topic: str) -> None:
    folder = cloud.device_files("device-a")
    assert publish_raw(LOOPBACK, cloud.device_port, folder, topic.encode(), fake_jpeg(200)) is None


def test_ids_the_broker_passes_but_the_contract_refuses_never_become_file_names(cloud: CloudBroker,
                                                                               tmp_path: Path) -> None:
    store = tmp_path / "store"
    folder = cloud.device_files("device-a")
    cameras = ["cam\u202e0gpj.exe", "cam\u2066x", "cam 0", "x" * 65]
    with running(processor_config(cloud, store, "facecap-processor-ids")) as processor:
        for camera in cameras:
            code = publish_raw(LOOPBACK, cloud.device_port, folder, f"faces/device-a/{camera}".encode(),
                               fake_jpeg(200))
            assert code == 0x00
        assert wait_until(lambda: processor.stats.quarantined == len(cameras), 20)
        assert processor.stats.stored == 0
    assert len(quarantined(store, "bad-camera-id")) == len(cameras)
    names = [p.name for p in store.rglob("*")]
    assert not [n for n in names if any(c in n for c in "\u202e\u2066 ")]
