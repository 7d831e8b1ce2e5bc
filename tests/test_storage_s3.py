"""The S3 store against a real S3 server (SeaweedFS), reached the way boto3 is configured in production:
endpoint, region and credentials from the environment only."""

from __future__ import annotations

from typing import Any

import pytest

from facecap.devkit.servers import S3Server
from facecap.storage import StoreError, open_store
from facecap.storage.s3 import S3Store

from .support.s3 import s3_with_bucket

pytestmark = pytest.mark.integration

BUCKET = "facecap-store-test"


@pytest.fixture
def s3_env(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> Any:
    return s3_with_bucket(s3_server, monkeypatch, BUCKET)


def test_put_stores_bytes_content_type_metadata_and_encryption(s3_env: Any) -> None:
    store = open_store(f"s3://{BUCKET}/faces")
    assert isinstance(store, S3Store)
    assert "127.0.0.1" in store.describe()  # the endpoint came from AWS_ENDPOINT_URL_S3
    body = b"\xff\xd8\xff" + bytes(range(256)) * 100
    store.put("dev-1/2026/a.jpg", body, "image/jpeg", {"face-id": "01ABC", "track-id": "tränk"})
    head = s3_env.head_object(Bucket=BUCKET, Key="faces/dev-1/2026/a.jpg")
    assert head["ContentType"] == "image/jpeg"
    assert head["Metadata"] == {"face-id": "01ABC", "track-id": "tr%C3%A4nk"}
    assert head["ServerSideEncryption"] == "AES256"
    assert s3_env.get_object(Bucket=BUCKET, Key="faces/dev-1/2026/a.jpg")["Body"].read() == body


def test_put_sends_the_body_without_waiting_for_100_continue(s3_env: Any) -> None:
    store = open_store(f"s3://{BUCKET}/faces")
    assert isinstance(store, S3Store)
    sent: list[dict[str, str]] = []
    store._client.meta.events.register(  # the request as it goes on the wire
        "before-send.s3.PutObject", lambda request, **_: sent.append(dict(request.headers)))
    store.put("dev-1/e.jpg", b"\xff\xd8\xff" + b"e" * 30_000, "image/jpeg", {})
    assert len(sent) == 1
    assert "Expect" not in sent[0]
    assert any(name.lower() == "x-amz-checksum-crc32" for name in sent[0])  # integrity is still checked
    assert s3_env.head_object(Bucket=BUCKET, Key="faces/dev-1/e.jpg")["ContentLength"] == 30_003


def test_putting_a_key_again_keeps_one_object(s3_env: Any) -> None:
    store = open_store(f"s3://{BUCKET}/p", server_side_encryption="")
    for _ in range(3):
        store.put("d/k.jpg", b"\xff\xd8\xffsame", "image/jpeg", {"face-id": "X"})
    listing = s3_env.list_objects_v2(Bucket=BUCKET, Prefix="p/")
    assert [item["Key"] for item in listing["Contents"]] == ["p/d/k.jpg"]


def test_missing_bucket_is_a_permanent_store_error(s3_env: Any) -> None:
    store = open_store("s3://no-such-bucket-here/x")
    with pytest.raises(StoreError) as caught:
        store.put("k.jpg", b"x", "image/jpeg", {})
    assert not caught.value.transient
    assert "NoSuchBucket" in str(caught.value)


def test_unreachable_server_is_a_transient_store_error(s3_env: Any, s3_server: S3Server) -> None:
    store = open_store(f"s3://{BUCKET}/x")
    s3_server.stop()
    with pytest.raises(StoreError) as caught:
        store.put("k.jpg", b"x", "image/jpeg", {})
    assert caught.value.transient
