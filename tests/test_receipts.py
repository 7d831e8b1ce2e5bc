"""Receipts (contract v1.1): the format, which face a finished message names, and the processor's batching
per device on a real broker."""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone

import pytest

from facecap.devkit.servers import MosquittoServer
from facecap.errors import ContractError
from facecap.mqtt import MqttClient, ReceivedMessage
from facecap.processor.plan import plan_message, quarantine_plan
from facecap.processor.receipts import ReceiptSender, receipt_target
from facecap.receipts import MAX_IDS_PER_RECEIPT, RECEIPT_SCHEMA, encode_receipt, parse_receipt, receipt_topic

from .support.helpers import Collector, sample_face, settings_for, subscriber


def received(face_topic: str, payload: bytes, props: tuple[tuple[str, str], ...] = (),
             content_type: str | None = "image/jpeg") -> ReceivedMessage:
    return ReceivedMessage(face_topic, payload, content_type, props, 1, False)


def plan(message: ReceivedMessage):  # type: ignore[no-untyped-def]
    return plan_message(message, topic_prefix="faces", max_payload_bytes=1 << 20, quarantine_prefix="quarantine",
                        received_at=datetime.now(timezone.utc))


def test_a_receipt_round_trips_and_stays_compact() -> None:
    ids = [sample_face(frame=i).face_id for i in range(100)]
    payload = encode_receipt(ids[:90], ids[90:])
    assert parse_receipt(payload).stored == tuple(ids[:90])
    assert parse_receipt(payload).face_ids == tuple(ids)
    assert len(payload) < 100 * 30
    assert json.loads(encode_receipt(ids[:1])) == {"schema": RECEIPT_SCHEMA, "stored": ids[:1]}
    assert receipt_topic("jetson-1") == "facecap/jetson-1/receipts"
    later = json.dumps({"schema": RECEIPT_SCHEMA, "stored": ids[:2], "newKey": 1}).encode()
    assert parse_receipt(later).stored == tuple(ids[:2])  # unknown keys are for later versions


@pytest.mark.parametrize("payload", [b"not json", b"[]", b'{"schema": "other/1", "stored": []}',
                                     b'{"schema": "facecap-receipt/1", "stored": ["../etc"]}',
                                     b'{"schema": "facecap-receipt/1", "stored": "01J"}',
                                     b"[" * 100_000])  # deeper than the JSON parser's stack
def test_bad_receipts_are_refused_with_a_reason(payload: bytes) -> None:
    with pytest.raises(ContractError) as error:
        parse_receipt(payload)
    assert error.value.reason == "bad-receipt"


def test_which_device_and_face_a_finished_message_names() -> None:
    face = sample_face(device="jetson-1")
    good = received(face.topic, face.payload, face.user_properties)
    assert receipt_target(good, plan(good), "faces") == ("jetson-1", face.face_id)
    # Quarantined (the payload does not match its sha256) but still the device's face: it is finished too.
    bad = received(face.topic, face.payload + b"x", face.user_properties)
    assert plan(bad).quarantined
    assert receipt_target(bad, plan(bad), "faces") == ("jetson-1", face.face_id)
    legacy = received("faces/jetson-1/old", face.payload)
    assert receipt_target(legacy, plan(legacy), "faces") == ("jetson-1", plan(legacy).face_id)
    nowhere = received("other/jetson-1/cam0", face.payload, face.user_properties)
    assert receipt_target(nowhere, plan(nowhere), "faces") is None
    bad_device = received("faces/bad device/cam0", face.payload, face.user_properties)
    assert receipt_target(bad_device, plan(bad_device), "faces") is None


@pytest.mark.integration
def test_the_processor_batches_receipts_per_device_within_the_window(broker: MosquittoServer) -> None:
    collector = Collector()
    reader = subscriber(broker, "facecap/+/receipts", collector)
    client = MqttClient(settings_for(broker), "processor-receipts")
    client.start()
    sender = ReceiptSender(client, topic_prefix="faces", window_seconds=0.2)
    sender.start()
    finished = []
    for index, device in enumerate(["jetson-1"] * (MAX_IDS_PER_RECEIPT + 200) + ["jetson-2"] * 10):
        face = sample_face(device=device, size=200, frame=index)
        message = received(face.topic, face.payload, face.user_properties)
        finished.append((device, face.face_id, message, plan(message)))
    # Over the device's rate ceiling: quarantined, but no receipt, so the device's outbox sends it again.
    over = sample_face(device="jetson-2", size=200, frame=99_999)
    over_message = received(over.topic, over.payload, over.user_properties)
    started = time.monotonic()
    sender.finished(over_message, quarantine_plan(over_message, "rate", "over 50 faces/s", "quarantine",
                                                  datetime.now(timezone.utc)))
    for _, _, message, face_plan in finished:
        sender.finished(message, face_plan)
    # Quarantined for a reason that will not change: a receipt all the same, under `quarantined`.
    broken = sample_face(device="jetson-2", size=200, frame=99_998)
    broken_message = received(broken.topic, broken.payload + b"x", broken.user_properties)  # fails its sha256
    sender.finished(broken_message, plan(broken_message))
    assert collector.wait_for(3, timeout=10)
    elapsed = time.monotonic() - started
    time.sleep(0.5)  # a fourth message would come within the window
    print(f"\n{len(finished)} finished faces of 2 devices: {len(collector.messages)} receipts, the last "
          f"{elapsed * 1000:.0f} ms after the first face finished")
    assert len(collector.messages) == 3 and {m.qos for m in collector.messages} == {1}
    got: dict[str, list[str]] = {"jetson-1": [], "jetson-2": []}
    quarantined: list[str] = []
    for m in collector.messages:
        got[m.topic.split("/")[1]] += parse_receipt(m.payload).stored
        quarantined += parse_receipt(m.payload).quarantined
    assert got == {d: [fid for dev, fid, _, _ in finished if dev == d] for d in ("jetson-1", "jetson-2")}
    assert quarantined == [broken.face_id]
    assert sender.stats.sent == 3 and sender.stats.faces == len(finished) + 1
    sender.stop()
    client.stop()
    reader.stop()


@pytest.mark.integration
def test_a_fleet_finishing_at_once_gets_every_receipt(broker: MosquittoServer) -> None:
    # After a regional power cut every device finishes faces in the same window: more receipt messages than
    # the client has in-flight slots. Each dropped receipt would cost its face a whole trip again.
    devices = [f"jetson-{index:03d}" for index in range(120)]
    collector = Collector()
    reader = subscriber(broker, "facecap/+/receipts", collector)
    client = MqttClient(settings_for(broker, max_in_flight=8), "processor-fleet-receipts")
    client.start()
    sender = ReceiptSender(client, topic_prefix="faces", window_seconds=0.2)
    sender.start()
    try:
        expected = {}
        for index, device in enumerate(devices):
            face = sample_face(device=device, size=100, frame=index)
            message = received(face.topic, face.payload, face.user_properties)
            sender.finished(message, plan(message))
            expected[device] = [face.face_id]
        collector.wait_for(len(devices), timeout=20)
        got = {m.topic.split("/")[1]: list(parse_receipt(m.payload).stored) for m in collector.messages}
        assert sender.stats.dropped == 0
        assert got == expected, f"{len(set(expected) - set(got))} devices got no receipt"
    finally:
        sender.stop()
        client.stop()
        reader.stop()


def _rules(text: str) -> set[str]:
    return {" ".join(line.split()) for line in text.splitlines() if line.strip() and not line.startswith("#")}


def test_the_demo_cloud_acl_grants_what_the_shipped_one_grants() -> None:
    """The demo's cloud broker (passwords, one listener) must follow the shipped topic rules: only the
    processor writes receipts, a device reads only its own."""
    from facecap.devkit.demo.pipeline import CLOUD_ACL

    from .conftest import REPO

    device_part, _, processor_part = CLOUD_ACL.partition("user processor\n")
    shipped_device = _rules((REPO / "cloud/mosquitto/acl").read_text())
    shipped_processor = _rules((REPO / "cloud/mosquitto/processor.acl").read_text()) - {"user processor"}
    assert _rules(device_part) == shipped_device
    # The demo's processor may also take a shared subscription, which the shipped one grants by faces/#.
    assert _rules(processor_part) - {"topic read $share/+/faces/#"} == shipped_processor
    assert "pattern read facecap/%u/receipts" in shipped_device
    assert "topic write facecap/+/receipts" in shipped_processor
