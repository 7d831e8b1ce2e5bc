"""Every rule of the face message contract v1."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta, timezone

import pytest

from facecap.contract import (
    DEFAULT_MAX_PAYLOAD_BYTES,
    SCHEMA,
    FaceIdGenerator,
    FaceMetadata,
    build_message,
    face_id_time,
    face_topic,
    format_time,
    new_face_id,
    parse_message,
    parse_time,
    sniff_content_type,
)
from facecap.errors import ContractError

from .support.helpers import fake_jpeg

pytestmark = pytest.mark.unit

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 50
WHEN = datetime(2026, 11, 22, 21, 56, 25, 123456, tzinfo=timezone.utc)


def meta(**overrides: object) -> FaceMetadata:
    values: dict[str, object] = {"device_id": "jetson-1", "camera_id": "cam0", "captured_at": WHEN,
                                 "bbox": (10, 20, 64, 80), "score": 0.9312, "frame": 42, "track_id": "7",
                                 "detector": "yunet"}
    values.update(overrides)
    return FaceMetadata(**values)  # type: ignore[arg-type]


def test_build_message_sets_every_property() -> None:
    payload = fake_jpeg(500)
    face = build_message(payload, meta())
    props = dict(face.user_properties)
    assert face.topic == "faces/jetson-1/cam0"
    assert face.payload is payload
    assert face.content_type == "image/jpeg"
    assert set(props) == {"schema", "face-id", "device-id", "camera-id", "captured-at", "frame", "bbox",
                          "score", "track-id", "detector", "sha256"}
    assert props["schema"] == SCHEMA
    assert props["captured-at"] == "2026-11-22T21:56:25.123Z"
    assert props["bbox"] == "10,20,64,80"
    assert props["score"] == "0.9312"
    assert props["frame"] == "42"
    assert props["sha256"] == hashlib.sha256(payload).hexdigest()
    assert all(isinstance(v, str) for v in props.values())


def test_round_trip() -> None:
    face = build_message(PNG, meta(), topic_prefix="site/a/faces")
    parsed = parse_message(face.topic, face.payload, face.content_type, face.user_properties,
                           topic_prefix="site/a/faces")
    assert parsed.face_id == face.face_id
    assert (parsed.device_id, parsed.camera_id) == ("jetson-1", "cam0")
    assert parsed.content_type == "image/png" and parsed.extension == "png"
    assert parsed.captured_at == WHEN.replace(microsecond=123000)
    assert parsed.bbox == (10, 20, 64, 80)
    assert parsed.score == pytest.approx(0.9312)
    assert parsed.frame == 42 and parsed.track_id == "7" and parsed.detector == "yunet"
    assert not parsed.legacy
    assert parsed.properties()["face-id"] == face.face_id


def test_shot_property_is_optional_v1_1() -> None:
    """Contract v1.1: `shot` (first | best) rides along when set, and v1 messages without it still parse."""
    for kind in ("first", "best"):
        face = build_message(fake_jpeg(400), meta(shot=kind))
        props = dict(face.user_properties)
        assert props["shot"] == kind and props["schema"] == SCHEMA
        parsed = parse_message(face.topic, face.payload, face.content_type, face.user_properties)
        assert parsed.shot == kind and parsed.properties()["shot"] == kind
    v1 = build_message(fake_jpeg(400), meta())
    assert "shot" not in dict(v1.user_properties)
    parsed = parse_message(v1.topic, v1.payload, v1.content_type, v1.user_properties)
    assert parsed.shot is None and "shot" not in parsed.properties()
    with pytest.raises(ContractError) as info:
        build_message(fake_jpeg(400), meta(shot="last"))
    assert info.value.reason == "bad-property"


def test_face_ids_unique_and_time_sorted() -> None:
    ids = [new_face_id() for _ in range(5000)]
    assert len(set(ids)) == 5000
    assert ids == sorted(ids)
    assert all(len(i) == 26 for i in ids)
    assert abs(face_id_time(ids[0]) - datetime.now(timezone.utc)) < timedelta(seconds=5)


def test_face_ids_monotonic_when_clock_stands_still_or_steps_back() -> None:
    times = iter([1000, 1000, 1000, 999, 2000])
    generator = FaceIdGenerator(lambda: next(times))
    ids = [generator.new() for _ in range(5)]
    assert ids == sorted(ids) and len(set(ids)) == 5
    assert face_id_time(ids[4]) > face_id_time(ids[3])


@pytest.mark.parametrize("bad", ["", "a/b", "..", ".", "a b", "x" * 65, "dev+1", "é", "a\x00b", "../etc"])
def test_bad_device_ids_rejected(bad: str) -> None:
    with pytest.raises(ContractError) as info:
        build_message(fake_jpeg(100), meta(device_id=bad))
    assert info.value.reason == "bad-device-id"


@pytest.mark.parametrize("bad", ["", "c/d", "..", "x" * 65])
def test_bad_camera_ids_rejected(bad: str) -> None:
    with pytest.raises(ContractError) as info:
        build_message(fake_jpeg(100), meta(camera_id=bad))
    assert info.value.reason == "bad-camera-id"


def test_id_of_64_safe_characters_is_accepted() -> None:
    assert face_topic("A" * 64, "cam.0_x-1") == f"faces/{'A' * 64}/cam.0_x-1"


def test_payload_that_is_not_an_image_is_rejected_both_ways() -> None:
    with pytest.raises(ContractError) as built:
        build_message(b"GIF89a....", meta())
    assert built.value.reason == "not-an-image"
    with pytest.raises(ContractError) as parsed:
        parse_message("faces/jetson-1/cam0", b'{"image": "base64..."}')
    assert parsed.value.reason == "not-an-image"
    with pytest.raises(ContractError):
        parse_message("faces/jetson-1/cam0", b"")


def test_sniffing() -> None:
    assert sniff_content_type(fake_jpeg(10)) == "image/jpeg"
    assert sniff_content_type(PNG) == "image/png"
    assert sniff_content_type(b"\xff\xd8") is None


def test_size_limit() -> None:
    big = fake_jpeg(DEFAULT_MAX_PAYLOAD_BYTES + 1)
    with pytest.raises(ContractError) as built:
        build_message(big, meta())
    assert built.value.reason == "too-large"
    with pytest.raises(ContractError) as parsed:
        parse_message("faces/jetson-1/cam0", big)
    assert parsed.value.reason == "too-large"
    assert parse_message("faces/jetson-1/cam0", fake_jpeg(200), max_payload_bytes=200).legacy


def test_sha256_mismatch_rejected() -> None:
    face = build_message(fake_jpeg(300), meta())
    tampered = face.payload[:-1] + bytes([face.payload[-1] ^ 1])
    with pytest.raises(ContractError) as info:
        parse_message(face.topic, tampered, face.content_type, face.user_properties)
    assert info.value.reason == "sha256-mismatch"


def test_content_type_must_match_payload() -> None:
    face = build_message(fake_jpeg(300), meta())
    with pytest.raises(ContractError) as info:
        parse_message(face.topic, face.payload, "image/png", face.user_properties)
    assert info.value.reason == "content-type-mismatch"


def test_device_id_comes_from_topic_and_must_agree() -> None:
    face = build_message(fake_jpeg(300), meta(device_id="jetson-1"))
    with pytest.raises(ContractError) as info:
        parse_message("faces/jetson-2/cam0", face.payload, face.content_type, face.user_properties)
    assert info.value.reason == "device-id-mismatch"


@pytest.mark.parametrize("topic", ["faces/../cam0", "faces/a/../b", "faces", "other/jetson-1/cam0",
                                   "faces//cam0", "faces/jetson-1/cam0/extra", "faces/a b/c"])
def test_bad_topics_rejected(topic: str) -> None:
    with pytest.raises(ContractError) as info:
        parse_message(topic, fake_jpeg(100))
    assert info.value.reason in {"bad-topic", "bad-device-id", "bad-camera-id"}


def test_bare_image_is_accepted_as_legacy() -> None:
    payload = fake_jpeg(400)
    parsed = parse_message("faces/old-pi", payload)
    assert parsed.legacy
    assert parsed.face_id == hashlib.sha256(payload).hexdigest()
    assert parsed.device_id == "old-pi" and parsed.camera_id == "default"
    assert parsed.captured_at is None
    assert parsed.properties()["schema"] == "legacy"


@pytest.mark.parametrize(("name", "value", "reason"), [
    ("schema", "facecap/2", "bad-schema"),
    ("face-id", "not-a-ulid", "bad-face-id"),
    ("face-id", "", "missing-property"),
    ("captured-at", "2026-11-22 21:56:25", "bad-property"),
    ("captured-at", "2026-13-40T25:00:00.000Z", "bad-property"),
    ("bbox", "1,2,3", "bad-property"),
    ("bbox", "1,2,0,4", "bad-property"),
    ("score", "high", "bad-property"),
    ("frame", "1.5", "bad-property"),
    ("shot", "second", "bad-property"),
])
def test_bad_properties_rejected(name: str, value: str, reason: str) -> None:
    face = build_message(fake_jpeg(300), meta())
    props = dict(face.user_properties)
    props[name] = value
    with pytest.raises(ContractError) as info:
        parse_message(face.topic, face.payload, face.content_type, props)
    assert info.value.reason == reason


def test_time_format_round_trip() -> None:
    text = format_time(WHEN)
    assert text == "2026-11-22T21:56:25.123Z"
    assert parse_time(text) == WHEN.replace(microsecond=123000)
    local = WHEN.astimezone(timezone(timedelta(hours=2)))
    assert format_time(local) == text
