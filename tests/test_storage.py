"""Object keys, store URLs, S3 metadata rules and the file store."""

from __future__ import annotations

import json
import os
import threading
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from facecap.contract import FaceMetadata, OutgoingFace, build_message, parse_message
from facecap.errors import ContractError
from facecap.storage import StoreError, face_key, message_digest, open_store, parse_store_url, quarantine_key
from facecap.storage.files import FileStore
from facecap.storage.s3 import METADATA_BUDGET, TRUNCATED, s3_metadata

from .support.helpers import fake_jpeg

pytestmark = pytest.mark.unit

CAPTURED = datetime(2026, 11, 22, 21, 56, 25, 123456, tzinfo=timezone.utc)


Received = tuple[str, bytes, str, tuple[tuple[str, str], ...]]


def as_received(face: OutgoingFace) -> Received:
    return face.topic, face.payload, face.content_type, face.user_properties


def received() -> Received:
    meta = FaceMetadata(device_id="jetson-1", camera_id="cam0", captured_at=CAPTURED, bbox=(1, 2, 30, 40),
                        score=0.9, face_id="01JDX0000000000000000000AB")
    return as_received(build_message(fake_jpeg(2000, seed=1), meta))


def test_face_key_layout_is_device_then_utc_hour_then_time_and_id() -> None:
    message = parse_message(*received())
    key = face_key(message, "faces")
    assert key == "faces/jetson-1/2026/11/22/21/20261122T215625.123Z_01JDX0000000000000000000AB.jpg"


def test_face_key_is_the_same_for_every_copy_and_differs_per_face() -> None:
    first = parse_message(*received())
    again = parse_message(*received())
    assert face_key(first) == face_key(again)
    other = FaceMetadata(device_id="jetson-1", camera_id="cam0", captured_at=CAPTURED, bbox=(1, 2, 30, 40),
                         score=0.9)
    assert face_key(parse_message(*as_received(build_message(fake_jpeg(2000), other)))) != face_key(first)


def test_face_key_uses_utc_for_the_date_levels() -> None:
    message = parse_message(*received())
    two_hours_east = timezone(timedelta(hours=2))
    shifted = replace(message, captured_at=datetime(2026, 11, 23, 0, 30, 0, 5000, tzinfo=two_hours_east))
    assert face_key(shifted).startswith("jetson-1/2026/11/22/22/20261122T223000.005Z_")


def test_legacy_image_goes_to_an_undated_key_named_by_its_hash() -> None:
    payload = fake_jpeg(3000, seed=7)
    legacy = parse_message("faces/old-cam-3", payload, None, ())
    assert legacy.legacy
    key = face_key(legacy, "p")
    assert key == f"p/old-cam-3/undated/{legacy.sha256}.jpg"
    assert face_key(parse_message("faces/old-cam-3", payload, None, ()), "p") == key


def test_face_key_refuses_a_device_id_that_could_escape() -> None:
    message = parse_message(*received())
    forged = replace(message, device_id="..")
    with pytest.raises(ContractError):
        face_key(forged)


def test_quarantine_key_is_dated_by_reception_and_names_the_reason() -> None:
    digest = message_digest("faces/../x", b"abc", None, ())
    key = quarantine_key("quarantine", CAPTURED, "not-an-image", digest)
    assert key == f"quarantine/2026/11/22/not-an-image/{digest}.bin"
    assert quarantine_key("q", CAPTURED, "Weird Reason/../x", digest, "json").endswith(
        f"/weird-reason-x/{digest}.json")


def test_message_digest_tells_apart_what_the_payload_alone_would_not() -> None:
    base = message_digest("faces/a/b", b"same", "image/jpeg", (("k", "v"),))
    assert base == message_digest("faces/a/b", b"same", "image/jpeg", (("k", "v"),))
    assert base != message_digest("faces/a/c", b"same", "image/jpeg", (("k", "v"),))
    assert base != message_digest("faces/a/b", b"same", "image/png", (("k", "v"),))
    assert base != message_digest("faces/a/b", b"same", "image/jpeg", (("k", "w"),))
    # Length prefixes keep field boundaries: moving a character between fields changes the digest.
    assert message_digest("ab", b"", "c", ()) != message_digest("a", b"", "bc", ())


@pytest.mark.parametrize(("url", "expected"), [
    ("s3://my-bucket", ("s3", "my-bucket", "")),
    ("s3://my-bucket/faces/", ("s3", "my-bucket", "faces")),
    ("s3://my.bucket-1/a/b", ("s3", "my.bucket-1", "a/b")),
])
def test_s3_urls(url: str, expected: tuple[str, str, str]) -> None:
    parsed = parse_store_url(url)
    assert (parsed.scheme, parsed.bucket, parsed.prefix) == expected


def test_file_url() -> None:
    assert parse_store_url("file:///var/lib/facecap/faces").root == Path("/var/lib/facecap/faces")


@pytest.mark.parametrize(("url", "complaint"), [
    ("http://bucket/x", "must start with s3:// or file://"),
    ("s3://Bad_Bucket/x", "not a valid S3 bucket name"),
    ("s3://ok-bucket/../x", "prefix"),
    ("s3://ok-bucket/x?versionId=1", "query"),
    ("file://relative/path", "names a host"),
    ("file:///a/../b", "absolute path without .."),
])
def test_bad_store_urls_say_what_is_wrong(url: str, complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint.replace("?", r"\?")):
        parse_store_url(url)


def test_s3_metadata_keeps_ascii_encodes_the_rest_and_respects_the_budget() -> None:
    metadata = s3_metadata({"Face-ID": "X1", "track id": "ünï", "detector": "yunet 2023"})
    assert metadata == {"face-id": "X1", "track-id": "%C3%BCn%C3%AF", "detector": "yunet 2023"}
    assert all(value.isascii() for value in metadata.values())
    big = s3_metadata({"first": "a" * 100, "huge": "b" * METADATA_BUDGET, "later": "c"})
    assert big == {"first": "a" * 100, TRUNCATED: "true"}
    assert sum(len(k) + len(v) for k, v in big.items()) <= 2048


def test_file_store_writes_object_and_sidecar(tmp_path: Path) -> None:
    store = open_store(f"file://{tmp_path}/faces")
    assert isinstance(store, FileStore)
    store.put("dev/2026/a.jpg", b"\xff\xd8\xffdata", "image/jpeg", {"face-id": "A", "topic": "faces/dev/c"})
    path = tmp_path / "faces" / "dev" / "2026" / "a.jpg"
    assert path.read_bytes() == b"\xff\xd8\xffdata"
    sidecar = json.loads((path.parent / "a.jpg.json").read_text())
    assert sidecar == {"contentType": "image/jpeg", "metadata": {"face-id": "A", "topic": "faces/dev/c"}}
    # Putting the same key again replaces the object: one file, no temporary leftovers.
    store.put("dev/2026/a.jpg", b"\xff\xd8\xffdata", "image/jpeg", {"face-id": "A", "topic": "faces/dev/c"})
    assert sorted(p.name for p in path.parent.iterdir()) == ["a.jpg", "a.jpg.json"]


def test_file_store_refuses_keys_that_leave_its_root(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "root")
    for key in ("../outside.jpg", "/etc/x", "a//b", "a/./b", "a/.."):
        with pytest.raises(StoreError, match="unsafe object key"):
            store.put(key, b"x", "application/octet-stream", {})
    assert not (tmp_path / "outside.jpg").exists()


def test_file_store_failure_is_a_store_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(StoreError, match="cannot write"):
        FileStore(blocker / "faces").put("k.jpg", b"x", "image/jpeg", {})


def test_file_store_never_shows_a_partial_object(tmp_path: Path) -> None:
    """Readers racing a writer see the old bytes or the new bytes, never a mix or a short file."""
    store = FileStore(tmp_path)
    old, new = b"\xff\xd8\xff" + b"o" * 500_000, b"\xff\xd8\xff" + b"n" * 500_000
    store.put("k.jpg", old, "image/jpeg", {})
    seen: set[bytes] = set()
    done = threading.Event()

    def read() -> None:
        while not done.is_set():
            seen.add((tmp_path / "k.jpg").read_bytes())

    reader = threading.Thread(target=read)
    reader.start()
    for _ in range(20):
        store.put("k.jpg", new, "image/jpeg", {})
        store.put("k.jpg", old, "image/jpeg", {})
    done.set()
    reader.join()
    assert seen <= {old, new}
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]



def test_s3_endpoint_and_region_come_from_the_standard_variables() -> None:
    from facecap.storage.s3crt import resolve_endpoint, resolve_region

    assert resolve_region({"AWS_DEFAULT_REGION": "eu-west-1"}) == "eu-west-1"
    assert resolve_region({"AWS_REGION": "eu-central-1", "AWS_DEFAULT_REGION": "eu-west-1"}) == "eu-central-1"
    with pytest.raises(StoreError, match="AWS_REGION"):
        resolve_region({})
    custom = resolve_endpoint("faces", "eu-west-1", {"AWS_ENDPOINT_URL": "http://10.0.0.5:8333",
                                                      "AWS_ENDPOINT_URL_S3": "https://s3.example:9000"})
    assert (custom.host, custom.tls, custom.object_path("faces", "a b/c.jpg")) == \
        ("s3.example:9000", True, "/faces/a%20b/c.jpg")
    aws = resolve_endpoint("faces", "eu-west-1", {})
    assert (aws.host_for("faces"), aws.tls, aws.object_path("faces", "d/k.jpg")) == \
        ("faces.s3.eu-west-1.amazonaws.com", True, "/d/k.jpg")
    dotted = resolve_endpoint("faces.example.com", "eu-west-1", {})
    assert dotted.host_for("faces.example.com") == "s3.eu-west-1.amazonaws.com"
    with pytest.raises(StoreError, match="AWS_ENDPOINT_URL_S3"):
        resolve_endpoint("faces", "eu-west-1", {"AWS_ENDPOINT_URL_S3": "s3.example:9000"})


def test_open_store_refuses_an_unknown_s3_client() -> None:
    with pytest.raises(ValueError, match="botocore"):
        open_store("s3://faces/x", s3_client="botocore")
