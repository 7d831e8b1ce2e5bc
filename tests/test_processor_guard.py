"""The processor's per-device bounds (facecap.processor.guard) and the hardened ids and keys, as units."""

from __future__ import annotations

import logging
import re
import stat
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from facecap.contract import RESERVED_ID_PREFIX, RESERVED_IDS, is_reserved_id, parse_message
from facecap.errors import ContractError
from facecap.mqtt import ReceivedMessage
from facecap.outbox import OutboxSettings
from facecap.processor import guard as guard_module
from facecap.processor.guard import DEFAULT_BURST_FACES, MAX_LOGGED_CHARS, DeviceGuard, clip, device_of
from facecap.storage import StoreError
from facecap.storage.base import check_key_parts
from facecap.storage.files import FileStore

from .conftest import REPO
from .support.helpers import fake_jpeg, sample_face


def message(topic: str, retain: bool = False) -> ReceivedMessage:
    return ReceivedMessage(topic=topic, payload=b"x", content_type=None, user_properties=(), qos=1, retain=retain)


def test_a_device_over_its_ceiling_is_limited_and_the_others_are_not() -> None:
    guard = DeviceGuard(max_faces_per_second=50, topic_prefix="faces", burst_faces=100)
    burst = 100
    verdicts = [guard.screen(message("faces/noisy/cam0"), now=100.0) for _ in range(burst + 10)]
    assert verdicts.count("") == burst and verdicts.count("rate") == 10
    assert guard.screen(message("faces/quiet/cam0"), now=100.0) == ""
    # The bucket refills at the ceiling: half a second later 25 more pass.
    later = [guard.screen(message("faces/noisy/cam0"), now=100.5) for _ in range(30)]
    assert later.count("") == 25
    assert guard.faces["noisy"] == burst + 40 and guard.limited["noisy"] == 15
    assert "noisy=140" in guard.summary() and "over the rate ceiling: noisy=15" in guard.summary()


def test_an_honest_device_at_the_default_ceiling_is_never_limited() -> None:
    guard = DeviceGuard(max_faces_per_second=50, topic_prefix="faces")
    verdicts = [guard.screen(message("faces/honest/cam0"), now=i / 50) for i in range(2000)]
    assert set(verdicts) == {""}


def test_a_devices_whole_send_window_arriving_at_once_is_not_taken_for_a_flood() -> None:
    # After an uplink outage or a processor restart, the faces a detector published and has no receipt for
    # (outbox.maxUnconfirmed, 256 by default) arrive at once; at 2 s of the ceiling (100) the rest were
    # quarantined as `rate` and stored only after the device's redelivery a minute later.
    assert OutboxSettings().max_unconfirmed < DEFAULT_BURST_FACES
    guard = DeviceGuard(max_faces_per_second=50, topic_prefix="faces")
    window = OutboxSettings().max_unconfirmed
    assert {guard.screen(message("faces/honest/cam0"), now=100.0) for _ in range(window)} == {""}
    # A flood still empties the bucket.
    flood = [guard.screen(message("faces/honest/cam0"), now=100.0) for _ in range(DEFAULT_BURST_FACES)]
    assert flood.count("rate") == window


def test_the_device_tables_stay_bounded_by_forgetting_the_quietest(monkeypatch: pytest.MonkeyPatch) -> None:
    """More device ids than any fleet has means something is wrong: the tables forget the quietest, never a
    flooding device (forgetting it would give it a fresh burst)."""
    monkeypatch.setattr(guard_module, "_MAX_DEVICES", 10)
    guard = DeviceGuard(max_faces_per_second=50, topic_prefix="faces", burst_faces=5)
    for _ in range(30):
        guard.screen(message("faces/noisy/cam0"), now=100.0)
    for index in range(9):
        for _ in range(index + 1):
            guard.screen(message(f"faces/quiet{index}/cam0"), now=100.0)
    guard.screen(message("faces/newcomer/cam0"), now=100.0)  # the 11th id
    assert len(guard.faces) == 10 and "quiet0" not in guard.faces and "quiet0" not in guard._buckets
    assert guard.screen(message("faces/noisy/cam0"), now=100.0) == "rate"  # its empty bucket was kept


def test_ceiling_zero_turns_the_limit_off_and_retained_copies_are_ignored() -> None:
    guard = DeviceGuard(max_faces_per_second=0, topic_prefix="faces")
    assert {guard.screen(message("faces/a/cam0"), now=1.0) for _ in range(1000)} == {""}
    assert guard.screen(message("faces/a/cam0", retain=True)) == "retained"
    assert guard.retained["a"] == 1 and "retained ignored: a=1" in guard.summary()


def test_faces_stamped_by_a_clock_that_was_not_set_are_counted_and_the_device_named_once(
        caplog: pytest.LogCaptureFixture) -> None:
    """A Jetson without a clock battery boots at 1970 (or its image's build date) until NTP sets it; its faces
    are kept, but filed under that date, where nobody looks. The processor says which device does it."""
    guard = DeviceGuard(max_faces_per_second=50, topic_prefix="faces")
    now = datetime(2026, 11, 26, 12, 0, tzinfo=timezone.utc)
    for captured in (datetime(1970, 1, 1, 0, 0, 42, tzinfo=timezone.utc), datetime(2019, 3, 1, tzinfo=timezone.utc),
                     now + timedelta(days=1)):
        guard.check_clock("faces/jetson-1/cam0", captured, now)
    # An old face that waited in an outbox during a long outage, and a clock a little ahead: both fine.
    guard.check_clock("faces/jetson-2/cam0", now - timedelta(days=20), now)
    guard.check_clock("faces/jetson-2/cam0", now + timedelta(seconds=30), now)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and warnings[0].startswith("device jetson-1's clock is wrong: a face captured at 1970")
    assert guard.summary().endswith("clock not set: jetson-1=3")


def test_device_of_reads_the_device_level() -> None:
    assert device_of("faces/dev-1/cam0", "faces") == "dev-1"
    assert device_of("site/faces/dev-1", "site/faces") == "dev-1"
    assert device_of("other/dev-1/cam0", "faces") == ""


def test_clip_bounds_logged_text() -> None:
    assert clip("short") == "short"
    clipped = clip("v" * 1_000_000)
    assert len(clipped) <= MAX_LOGGED_CHARS and "1000000 characters" in clipped


@pytest.mark.parametrize("device", ["dev\n", "dev\r", "dev\x00", "dev\u202e", " dev", "d" * 65])
def test_ids_with_trailing_newlines_or_controls_are_refused(device: str) -> None:
    with pytest.raises(ContractError) as caught:
        parse_message(f"faces/{device}/cam0", fake_jpeg(100), "image/jpeg", ())
    assert caught.value.reason == "bad-device-id"


@pytest.mark.parametrize("device", ["processor", "quarantine", "broker", "facecap-processor", "FaceCap-x",
                                    "Processor"])
def test_reserved_device_ids_are_refused(device: str) -> None:
    assert is_reserved_id(device)
    face = sample_face(device=device)
    with pytest.raises(ContractError) as caught:
        parse_message(face.topic, face.payload, face.content_type, face.user_properties)
    assert caught.value.reason == "reserved-device-id"


def test_the_scripts_reserve_the_same_ids_as_the_contract() -> None:
    common = (REPO / "cloud" / "scripts" / "common.sh").read_text()
    listed = re.search(r"^RESERVED_IDS=\(([^)]*)\)", common, flags=re.MULTILINE)
    prefix = re.search(r"^RESERVED_PREFIX=(\S+)", common, flags=re.MULTILINE)
    assert listed and prefix
    assert set(listed.group(1).split()) == RESERVED_IDS
    assert prefix.group(1) == RESERVED_ID_PREFIX


@pytest.mark.parametrize("key", ["faces/dev\n/x.jpg", "faces/dev/x\x00.jpg", "faces/dev/gpj\u202eexe.jpg",
                                 "faces/dev/\u2066x.jpg", "faces/dev/x\x7f.jpg", "faces/dev/\x85x.jpg"])
def test_keys_with_control_or_bidi_characters_are_refused(key: str) -> None:
    with pytest.raises(StoreError, match="control character"):
        check_key_parts(key)


def test_file_store_writes_faces_readable_by_owner_and_group_only(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    store.put("faces/dev/x.jpg", b"\xff\xd8\xff", "image/jpeg", {"face-id": "x"})
    written = [path for path in (tmp_path / "faces" / "dev").iterdir()]
    assert sorted(path.name for path in written) == ["x.jpg", "x.jpg.json"]
    for path in written:
        assert stat.S_IMODE(path.stat().st_mode) & 0o037 == 0, f"{path.name}: {oct(path.stat().st_mode)}"
