"""FaceLogger: the line per face, the summary, and `facecap logger` as a process on a real broker."""

from __future__ import annotations

import hashlib
import json
import re
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from facecap.config import load_config
from facecap.contract import FaceMetadata, build_message
from facecap.devkit.servers import MosquittoServer, stop_process
from facecap.errors import ConfigError
from facecap.logger.config import LoggerConfig
from facecap.logger.facelog import FaceLog
from facecap.mqtt import MqttClient
from facecap.polling import wait_until

from .support.helpers import Collector, fake_jpeg, sample_face, settings_for, subscriber

CAPTURED = datetime(2026, 11, 22, 21, 56, 25, 123000, tzinfo=timezone.utc)


class FakeClock:
    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


Properties = tuple[tuple[str, str], ...]


def contract_face(device: str = "jetson-1", camera: str = "cam0",
                  size: int = 2_000) -> tuple[str, bytes, str, Properties]:
    meta = FaceMetadata(device_id=device, camera_id=camera, captured_at=CAPTURED, bbox=(10, 20, 64, 80),
                        score=0.9312, frame=7, track_id="t3", detector="yunet")
    face = build_message(fake_jpeg(size), meta)
    return face.topic, face.payload, face.content_type, face.user_properties


@pytest.mark.unit
def test_one_line_per_face_with_every_field() -> None:
    wall = FakeClock(CAPTURED.timestamp() + 1.25)
    log = FaceLog(wall_clock=wall)
    topic, payload, content_type, props = contract_face()
    verdict = log.handle(topic, payload, content_type, props)
    face_id = dict(props)["face-id"]
    assert verdict.accepted
    assert verdict.line == (f"face topic=faces/jetson-1/cam0 face-id={face_id} device=jetson-1 camera=cam0 "
                            f"bytes={len(payload)} bbox=10,20,64,80 score=0.931 age=1.250s")


@pytest.mark.unit
def test_bare_image_is_logged_as_legacy_with_its_hash_as_id() -> None:
    payload = fake_jpeg(500)
    verdict = FaceLog().handle("faces/old-pi/door", payload, None, ())
    assert verdict.accepted
    assert "device=old-pi camera=door" in verdict.line
    assert "bbox=- score=- age=- legacy=true" in verdict.line
    assert re.search(r"face-id=[0-9a-f]{64} ", verdict.line)


@pytest.mark.unit
@pytest.mark.parametrize(("topic", "payload", "props", "reason"), [
    ("faces/jetson-1/cam0", b"hello", (), "not-an-image"),
    ("faces/jetson-1/cam0", b"", (), "not-an-image"),
    ("faces/a/b/c", fake_jpeg(100), (), "bad-topic"),
    ("faces/bad id/cam0", fake_jpeg(100), (), "bad-device-id"),
    ("faces/jetson-1/cam0", fake_jpeg(100), (("schema", "facecap/1"), ("face-id", "x")), "missing-property"),
    ("faces/jetson-1/cam0", fake_jpeg(2_000_000), (), "too-large"),
])
def test_contract_breaches_are_logged_with_their_reason(topic: str, payload: bytes,
                                                        props: Properties, reason: str) -> None:
    log = FaceLog()
    verdict = log.handle(topic, payload, None, props)
    assert not verdict.accepted
    assert f"reason={reason} " in verdict.line
    shown = f'"{topic}"' if " " in topic else topic  # a value with a blank is quoted to stay one token
    assert verdict.line.startswith(f"rejected topic={shown} bytes={len(payload)} ")
    assert log.total_rejected == 1 and log.total_faces == 0


@pytest.mark.unit
def test_a_bbox_too_long_for_int_is_a_bad_property_not_a_traceback() -> None:
    topic, payload, content_type, props = contract_face()
    props = tuple((k, "1" * 5000 + ",2,3,4") if k == "bbox" else (k, v) for k, v in props)
    log = FaceLog()
    verdict = log.handle(topic, payload, content_type, props)
    assert not verdict.accepted and "reason=bad-property " in verdict.line
    assert log.total_rejected == 1


@pytest.mark.unit
def test_tampered_payload_is_a_sha256_mismatch() -> None:
    topic, payload, content_type, props = contract_face()
    verdict = FaceLog().handle(topic, payload[:-1] + b"\x00", content_type, props)
    assert "reason=sha256-mismatch" in verdict.line


@pytest.mark.unit
def test_hostile_text_stays_on_one_line() -> None:
    verdict = FaceLog().handle("faces/x\ny/z", b"junk", None, ())
    assert "\n" not in verdict.line
    assert verdict.line.startswith("rejected topic=faces/x?y/z bytes=4 ")


@pytest.mark.unit
def test_summary_counts_per_device_per_minute_and_resets() -> None:
    mono = FakeClock(1000.0)
    log = FaceLog(monotonic=mono, wall_clock=FakeClock(CAPTURED.timestamp()))
    for _ in range(6):
        log.handle(*contract_face(device="jetson-1"))
    for _ in range(3):
        log.handle(*contract_face(device="jetson-2"))
    duplicate = contract_face(device="jetson-2")
    log.handle(*duplicate)
    assert "duplicate=true" in log.handle(*duplicate).line
    log.handle("faces/jetson-1/cam0", b"junk", None, ())
    mono.now += 30.0
    assert log.summary() == ("summary faces=11 seconds=30.0 per-minute=22.0 duplicates=1 rejected=1 "
                             "devices=jetson-1:6(12.0/min),jetson-2:5(10.0/min) reasons=not-an-image:1")
    mono.now += 60.0
    assert log.summary() == "summary faces=0 seconds=60.0 per-minute=0.0 duplicates=0 rejected=0"
    assert log.total_faces == 11


@pytest.mark.unit
def test_logger_configuration_errors_name_the_key() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(LoggerConfig, "logger", {"topicPrefix": "faces/#", "summaryIntervalSeconds": 0,
                                             "mqtt": {"port": 0}}, env={})
    found = dict(caught.value.problems)
    assert "without wildcards" in found["topicPrefix"]
    assert "greater than or equal to 1" in found["summaryIntervalSeconds"]
    assert "mqtt.port" in found
    assert load_config(LoggerConfig, "logger", {"topicPrefix": "site/faces"}, env={}).topic_prefix == "site/faces"


# --- the process ----------------------------------------------------------------------------------------

def start_logger(broker: MosquittoServer, folder: Path, **config: Any) -> tuple[subprocess.Popen[bytes], Path]:
    settings: dict[str, Any] = {"deviceId": "edge-test", "summaryIntervalSeconds": 1,
                                "mqtt": {"host": broker.host, "port": broker.port, "maxReconnectDelaySeconds": 1}}
    settings.update(config)
    log_path = folder / "logger.log"
    with open(log_path, "wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "facecap.cli", "logger", "--config", json.dumps(settings)],
                                   stdout=out, stderr=subprocess.STDOUT)
    return process, log_path


@pytest.mark.integration
def test_logger_process_logs_every_face_and_survives_garbage(broker: MosquittoServer, tmp_path: Path) -> None:
    statuses = Collector()
    status_sub = subscriber(broker, "facecap/edge-test/logger/status", statuses)
    process, log_path = start_logger(broker, tmp_path)
    try:
        assert wait_until(lambda: "logging faces on faces/#" in log_path.read_text(), 20), log_path.read_text()
        pub = MqttClient(settings_for(broker), "detector-for-logger")
        pub.start()
        faces = [sample_face(device=f"jetson-{i % 2}", size=3_000, frame=i) for i in range(100)]
        odd = fake_jpeg(100)
        garbage: list[tuple[str, bytes, dict[str, str]]] = [
            ("faces/jetson-0/cam0", b"not an image at all", {}),
            ("faces/jetson-0/cam0", b"\x00" * 50_000, {"schema": "facecap/1"}),
            ("faces/jetson-0/cam0/extra/levels", fake_jpeg(100), {}),
            ("faces/jetson-0/cam0", fake_jpeg(100), {"schema": "facecap/9"}),
            ("faces/jetson-0/cam0", odd, {"schema": "facecap/1", "face-id": "01ARZ3NDEKTSV4RRFFQ69G5FAV",
                                          "captured-at": "yesterday", "sha256": hashlib.sha256(odd).hexdigest()}),
        ]
        futures = []
        for i, face in enumerate(faces):
            futures.append(pub.publish(face.topic, face.payload, content_type=face.content_type,
                                       user_properties=face.user_properties))
            if i % 20 == 0:
                topic, payload, props = garbage[i // 20]
                futures.append(pub.publish(topic, payload, user_properties=props))
        for future in futures:
            assert future is not None
            future.result(timeout=10)

        def face_lines() -> list[str]:
            return [line for line in log_path.read_text().splitlines() if " facecap.faces: face " in line]

        assert wait_until(lambda: len(face_lines()) >= 100, 20), log_path.read_text()[-3000:]
        text = log_path.read_text()
        lines = face_lines()
        assert len(lines) == 100
        assert {re.search(r"face-id=(\S+)", line).group(1) for line in lines} == {f.face_id for f in faces}  # type: ignore[union-attr]
        assert all(re.search(r"bytes=3000 bbox=10,20,64,80 score=0\.930 age=\d+\.\d{3}s$", line) for line in lines)
        rejected = [line for line in text.splitlines() if " facecap.faces: rejected " in line]
        assert len(rejected) == 5
        assert {re.search(r"reason=(\S+)", line).group(1) for line in rejected} == {  # type: ignore[union-attr]
            "not-an-image", "bad-topic", "bad-schema", "bad-property"}
        assert "Traceback" not in text
        assert process.poll() is None  # still running after all that
        assert statuses.wait_for(1) and statuses.messages[-1].payload == b"online"
        pub.stop()
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=15)
        stop_process(process)
    text = log_path.read_text()
    assert code == 0
    assert "stopped after 100 faces and 5 rejected messages" in text
    summaries = re.findall(r"summary faces=(\d+) .* rejected=(\d+)", text)
    assert sum(int(faces) for faces, _ in summaries) == 100
    assert sum(int(rejected) for _, rejected in summaries) == 5
    assert statuses.wait_for(2) and statuses.messages[-1].payload == b"offline"
    status_sub.stop()


@pytest.mark.integration
def test_logger_waits_for_a_broker_that_starts_late(broker: MosquittoServer, tmp_path: Path) -> None:
    broker.stop()
    process, log_path = start_logger(broker, tmp_path)
    try:
        time.sleep(3)
        assert process.poll() is None, log_path.read_text()
        broker.start()
        assert wait_until(lambda: "logging faces on faces/#" in log_path.read_text(), 20), log_path.read_text()
        pub = MqttClient(settings_for(broker), "late-detector")
        pub.start()
        face = sample_face(device="late")
        future = pub.publish(face.topic, face.payload, content_type=face.content_type,
                             user_properties=face.user_properties)
        assert future is not None
        future.result(timeout=10)
        assert wait_until(lambda: f"face-id={face.face_id}" in log_path.read_text(), 10)
        pub.stop()
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
