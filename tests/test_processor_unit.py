"""Processor configuration, message planning and the heartbeat: pure parts."""

from __future__ import annotations

import hashlib
import json
import time
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace

import pytest

from facecap.cli import main
from facecap.config import default_configuration, load_config
from facecap.contract import parse_message
from facecap.errors import ConfigError
from facecap.mqtt import ReceivedMessage
from facecap.processor.config import ProcessorConfig
from facecap.processor.guard import QuarantineLog
from facecap.processor.heartbeat import check_heartbeat, write_heartbeat
from facecap.processor.plan import plan_message
from facecap.storage import face_key

from .support.helpers import fake_jpeg, sample_face

pytestmark = pytest.mark.unit

NOW = datetime(2026, 3, 4, 5, 6, 7, tzinfo=timezone.utc)


def test_defaults() -> None:
    config = load_config(ProcessorConfig, "processor", None, env={})
    assert config.client_id == "facecap-processor"
    assert config.topic_filter == "faces/#"
    assert config.store == "file:///var/lib/facecap/faces"
    assert config.workers == 16 and config.receive_maximum == 64
    assert config.server_side_encryption == "AES256"
    assert config.status_topic == "facecap/facecap-processor/processor/status"
    defaults = default_configuration(ProcessorConfig)
    assert defaults["quarantinePrefix"] == "quarantine"
    assert defaults["retry"] == {"initialDelaySeconds": 0.5, "maxDelaySeconds": 30.0}


def test_docker_environment_variables() -> None:
    env = {
        "FACECAP_STORE": "s3://faces-bucket/faces",
        "FACECAP_MQTT__HOST": "mosquitto",
        "FACECAP_MQTT__PORT": "8883",
        "FACECAP_MQTT__TLS": "true",
        "FACECAP_MQTT__CA_FILE": "/run/secrets/ca.crt",
        "FACECAP_MQTT__USERNAME": "processor",
        "FACECAP_MQTT__PASSWORD_FILE": "/run/secrets/processor-password",
        "FACECAP_MQTT__CLIENT_ID": "facecap-processor-a",
        "FACECAP_SHARE_GROUP": "3f9c2a7d41be08e6",
        "FACECAP_WORKERS": "8",
        "FACECAP_RETRY__MAX_DELAY_SECONDS": "5",
        "FACECAP_HEARTBEAT_FILE": "/run/hb",
    }
    config = load_config(ProcessorConfig, "processor", None, env=env)
    assert config.store == "s3://faces-bucket/faces"
    assert (config.mqtt.host, config.mqtt.port, config.mqtt.tls) == ("mosquitto", 8883, True)
    assert config.mqtt.password_file == "/run/secrets/processor-password"
    assert config.topic_filter == "$share/3f9c2a7d41be08e6/faces/#"
    assert config.status_topic == "facecap/facecap-processor-a/processor/status"
    assert config.workers == 8 and config.retry.max_delay_seconds == 5
    assert config.heartbeat_file == "/run/hb"


def test_bad_configuration_names_every_bad_key() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(ProcessorConfig, "processor", {
            "store": "ftp://x", "shareGroup": "a/b", "workers": 0, "topicPrefix": "faces/#",
            "serverSideEncryption": "DES", "retry": {"initialDelaySeconds": -1}, "colour": "red",
        }, env={})
    keys = {key for key, _ in caught.value.problems}
    assert keys == {"store", "shareGroup", "workers", "topicPrefix", "serverSideEncryption",
                    "retry.initialDelaySeconds", "colour"}


def test_a_share_group_a_device_could_guess_is_refused() -> None:
    with pytest.raises(ConfigError, match="shareGroup: must be a secret of at least 16 characters"):
        load_config(ProcessorConfig, "processor", {"shareGroup": "processors"}, env={})
    assert load_config(ProcessorConfig, "processor", {"shareGroup": ""}, env={}).topic_filter == "faces/#"


def test_kms_key_needs_kms_and_client_id_must_be_a_safe_level() -> None:
    with pytest.raises(ConfigError, match="kmsKeyId needs serverSideEncryption aws:kms"):
        load_config(ProcessorConfig, "processor", {"kmsKeyId": "alias/x"}, env={})
    assert load_config(ProcessorConfig, "processor", {"serverSideEncryption": "aws:kms", "kmsKeyId": "alias/x"},
                       env={}).kms_key_id == "alias/x"
    with pytest.raises(ConfigError, match="clientId"):
        load_config(ProcessorConfig, "processor", {"mqtt": {"clientId": "a/b"}}, env={})
    # A client id a device could have (its certificate's CN) is refused: only "facecap..." ids are safe.
    with pytest.raises(ConfigError, match="must start with 'facecap'"):
        load_config(ProcessorConfig, "processor", {"mqtt": {"clientId": "processor-2"}}, env={})


def message(topic: str, payload: bytes, content_type: str | None = None,
            properties: tuple[tuple[str, str], ...] = ()) -> ReceivedMessage:
    return ReceivedMessage(topic, payload, content_type, properties, qos=1, retain=False)


def test_a_valid_face_becomes_one_object_with_its_properties_as_metadata() -> None:
    face = sample_face(device="dev-7", camera="cam2")
    result = plan_message(message(face.topic, face.payload, face.content_type, face.user_properties),
                          topic_prefix="faces", max_payload_bytes=1 << 20, quarantine_prefix="q", received_at=NOW)
    assert not result.quarantined and result.face_id == face.face_id
    (put,) = result.puts
    assert put.key == face_key(parse_message(face.topic, face.payload, face.content_type, face.user_properties))
    assert put.body == face.payload and put.content_type == "image/jpeg"
    assert list(put.metadata)[:3] == ["face-id", "device-id", "camera-id"]
    assert put.metadata["device-id"] == "dev-7" and put.metadata["topic"] == face.topic
    assert put.metadata["sha256"] == hashlib.sha256(face.payload).hexdigest()


@pytest.mark.parametrize(("topic", "payload", "limit", "reason"), [
    ("faces/dev/cam", b"hello, not an image", 1 << 20, "not-an-image"),
    ("faces/dev/cam", fake_jpeg(5000), 4000, "too-large"),
    ("faces/../x", fake_jpeg(100), 1 << 20, "bad-device-id"),
    ("faces/..%2F/cam", fake_jpeg(100), 1 << 20, "bad-device-id"),
    ("elsewhere/dev/cam", fake_jpeg(100), 1 << 20, "bad-topic"),
])
def test_rejected_messages_become_a_quarantine_pair(topic: str, payload: bytes, limit: int, reason: str) -> None:
    msg = message(topic, payload, None, (("note", "kept"),))
    result = plan_message(msg, topic_prefix="faces", max_payload_bytes=limit, quarantine_prefix="quarantine",
                          received_at=NOW)
    assert result.reason == reason
    data, record = result.puts
    assert data.key.startswith(f"quarantine/2026/03/04/{reason}/") and data.key.endswith(".bin")
    assert record.key == data.key[:-4] + ".json"
    assert data.body == payload and data.content_type == "application/octet-stream"
    assert data.metadata["quarantine-reason"] == reason and data.metadata["topic"] == topic
    assert data.metadata["note"] == "kept"
    details = json.loads(record.body)
    assert details["reason"] == reason and details["topic"] == topic
    assert details["userProperties"] == [["note", "kept"]] and details["payloadBytes"] == len(payload)
    # Every copy of the message plans the same keys.
    again = plan_message(msg, topic_prefix="faces", max_payload_bytes=limit, quarantine_prefix="quarantine",
                         received_at=NOW)
    assert [p.key for p in again.puts] == [data.key, record.key]


def test_a_devices_properties_cannot_overwrite_the_quarantine_records_own_metadata() -> None:
    hostile = (("quarantine-reason", "ok"), ("topic", "faces/other-device/cam0"), ("payload-sha256", "0" * 64))
    result = plan_message(message("faces/dev-a/cam0", b"not an image", None, hostile), topic_prefix="faces",
                          max_payload_bytes=1 << 20, quarantine_prefix="quarantine", received_at=NOW)
    metadata = result.puts[0].metadata
    assert metadata["quarantine-reason"] == "not-an-image" and metadata["topic"] == "faces/dev-a/cam0"
    assert metadata["payload-sha256"] == hashlib.sha256(b"not an image").hexdigest()


def test_sha256_mismatch_is_quarantined() -> None:
    face = sample_face()
    props = tuple((n, "0" * 64 if n == "sha256" else v) for n, v in face.user_properties)
    result = plan_message(message(face.topic, face.payload, face.content_type, props), topic_prefix="faces",
                          max_payload_bytes=1 << 20, quarantine_prefix="quarantine", received_at=NOW)
    assert result.reason == "sha256-mismatch"


def test_heartbeat_health(tmp_path: Path) -> None:
    path = tmp_path / "hb"
    assert check_heartbeat(path, 30) == (False, f"no heartbeat file {path} (processor not started yet, or stopped)")
    write_heartbeat(path, {"connected": True, "disconnectedFor": None, "stored": 3})
    healthy, text = check_heartbeat(path, 30)
    assert healthy and "stored 3" in text
    assert not check_heartbeat(path, 30, now=time.monotonic() + 31)[0]
    write_heartbeat(path, {"connected": False, "disconnectedFor": 100.0})
    healthy, text = check_heartbeat(path, 30)
    assert not healthy and "not connected" in text
    path.write_text("{half")
    assert not check_heartbeat(path, 30)[0]


def test_a_wall_clock_stepped_back_does_not_make_a_dead_processor_healthy(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "hb"
    write_heartbeat(path, {"connected": True, "disconnectedFor": None})
    wall, monotonic = time.time(), time.monotonic()
    # An hour later the processor is gone, and NTP has just set the wall clock back a day.
    later = SimpleNamespace(time=lambda: wall - 86_400 + 3600, monotonic=lambda: monotonic + 3600)
    monkeypatch.setattr("facecap.processor.heartbeat.time", later)
    healthy, text = check_heartbeat(path, 30)
    assert not healthy and "stuck or gone" in text, text


def test_heartbeat_unhealthy_after_a_time_disconnected_or_failing(tmp_path: Path) -> None:
    path = tmp_path / "hb"
    # Never connected since its start 20 s ago: fine for a limit of 60 s, not for 10 s.
    write_heartbeat(path, {"connected": False, "subscribed": False, "disconnectedFor": 20.0})
    assert check_heartbeat(path, 30, unhealthy_after=60)[0]
    healthy, text = check_heartbeat(path, 30, unhealthy_after=10)
    assert not healthy and "never subscribed" in text and "limit 10 s" in text
    # Store failing 20 s: unhealthy past the limit only while faces wait.
    write_heartbeat(path, {"connected": True, "disconnectedFor": None, "storeFailingFor": 20.0, "pending": 4})
    assert check_heartbeat(path, 30, unhealthy_after=60)[0]
    healthy, text = check_heartbeat(path, 30, unhealthy_after=10)
    assert not healthy and "store has been failing" in text and "4 face(s) pending" in text
    write_heartbeat(path, {"connected": True, "disconnectedFor": None, "storeFailingFor": 20.0, "pending": 0})
    assert check_heartbeat(path, 30, unhealthy_after=10)[0]


def test_healthcheck_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "hb"
    assert main(["processor", "healthcheck", "--file", str(path)]) == 1
    write_heartbeat(path, {"connected": True, "disconnectedFor": None})
    assert main(["processor", "healthcheck", "--file", str(path), "--max-age", "5"]) == 0
    config = json.dumps({"heartbeatFile": str(path), "heartbeatIntervalSeconds": 1})
    assert main(["processor", "healthcheck", "--config", config]) == 0
    assert "ok: heartbeat" in capsys.readouterr().out


def test_processor_reads_facecap_config_like_every_component(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "hb"
    write_heartbeat(path, {"connected": True, "disconnectedFor": None})
    monkeypatch.setenv("FACECAP_CONFIG", json.dumps({"heartbeatFile": str(path), "heartbeatIntervalSeconds": 1}))
    assert main(["processor", "healthcheck"]) == 0
    assert "ok: heartbeat" in capsys.readouterr().out
    # --config wins over the variable.
    assert main(["processor", "healthcheck", "--config", json.dumps({"heartbeatFile": str(tmp_path / "no")})]) == 1
    # The processor itself: a bad key in $FACECAP_CONFIG stops it before it connects, naming the key.
    monkeypatch.setenv("FACECAP_CONFIG", json.dumps({"workers": 0}))
    assert main(["processor"]) == 2
    assert "workers" in capsys.readouterr().err


@pytest.mark.unit
def test_a_flood_of_bad_messages_logs_a_line_per_device_and_reason_per_interval(
        caplog: pytest.LogCaptureFixture) -> None:
    now = [100.0]
    quarantine_log = QuarantineLog("faces", interval=10.0, clock=lambda: now[0])
    for _ in range(500):
        quarantine_log.note("faces/hostile/cam0", "not-an-image", "the payload is not a JPEG or PNG")
    quarantine_log.note("faces/hostile/cam0", "rate", "over the device's ceiling")
    quarantine_log.note("faces/honest/cam0", "not-an-image", "the payload is not a JPEG or PNG")
    lines = [r.getMessage() for r in caplog.records if r.name == "facecap.processor.guard"]
    assert lines == ["quarantined a message on faces/hostile/cam0: not-an-image: the payload is not a JPEG or PNG",
                     "quarantined a message on faces/hostile/cam0: rate: over the device's ceiling",
                     "quarantined a message on faces/honest/cam0: not-an-image: the payload is not a JPEG or PNG"]
    now[0] += 10.0
    quarantine_log.note("faces/hostile/cam0", "not-an-image", "the payload is not a JPEG or PNG")
    assert caplog.records[-1].getMessage().endswith("(499 more like it from this device since its last line)")
