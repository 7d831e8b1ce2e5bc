"""A store in an S3 bucket through awscrt's native S3 client (``awscrt.s3``).

Why not boto3 here: boto3 spends ~3.2 ms of Python CPU on every 30 KB PutObject (request building,
signing, checksum, parsing), which made the processor cost 4.2 ms per face. The CRT client signs,
checksums and sends in C on its own event-loop thread; Python only builds the headers. `put` waits for the
answer; `start_put` returns at once and hands the answer to a callback on that thread, which is how the
processor uses it (with its MQTT connection on the same event loop: `bootstrap`).
The wire stays what the boto3 store sends: PutObject with Content-Type, the x-amz-meta-* metadata, the
server-side encryption headers, an ``x-amz-checksum-crc32`` header the server checks the body against, and
no ``Expect: 100-continue`` round trip.

Found the standard way, as boto3 finds it: credentials from the default chain (environment, profile,
container or EC2 instance role), the region from AWS_REGION (or AWS_DEFAULT_REGION), the endpoint from
AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL for S3-compatible servers (path-style addressing there). Only
s3:PutObject is needed.
"""

from __future__ import annotations

import io
import os
import re
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

from awscrt import auth, http, s3
from awscrt import io as crtio
from awscrt.exceptions import AwsCrtError

from ..threadstate import keep_thread_state
from .base import PutDone, StoreError
from .s3 import PERMANENT_CODES, Encryption, S3Bucket, s3_metadata

if TYPE_CHECKING:
    from typing_extensions import Unpack

ENDPOINT_VARIABLES = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
REGION_VARIABLES = ("AWS_REGION", "AWS_DEFAULT_REGION")
# As the boto3 store: connect within 5 s, one quick retry inside the client; longer outages are the
# processor's exponential backoff, which keeps the message unacknowledged meanwhile.
CONNECT_TIMEOUT_MS = 5000
CLIENT_RETRIES = 1
# The CRT client has no read timeout of its own: a put that has not finished by then is cancelled and
# reported as a transient failure, so a hung server cannot hold a worker forever.
PUT_TIMEOUT_SECONDS = 30.0
# The deadline thread checks once a second, and a cancelled request still has to call back.
_DEADLINE_SLACK_SECONDS = 5.0
_ERROR_CODE = re.compile(rb"<Code>([^<]{1,100})</Code>")


@dataclass(frozen=True)
class Endpoint:
    """Where requests go: the Host header, the path of an object, and whether TLS is used."""

    host: str
    tls: bool
    path_style: bool
    url: str

    def object_path(self, bucket: str, key: str) -> str:
        quoted = quote(key, safe="/-._~")
        return f"/{bucket}/{quoted}" if self.path_style else f"/{quoted}"

    def host_for(self, bucket: str) -> str:
        return self.host if self.path_style else f"{bucket}.{self.host}"


def resolve_region(environ: Mapping[str, str] | None = None) -> str:
    environ = os.environ if environ is None else environ
    region = next((environ[name] for name in REGION_VARIABLES if environ.get(name)), "")
    if not region:
        raise StoreError("no AWS region for S3: set AWS_REGION (the compose file and the CloudFormation "
                         "template set it)", transient=False)
    return region


def resolve_endpoint(bucket: str, region: str, environ: Mapping[str, str] | None = None) -> Endpoint:
    """AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL (path-style, as S3-compatible servers expect), else the
    regional S3 endpoint, virtual-hosted unless the bucket name has dots (a wildcard certificate covers
    one level only, so boto3 also falls back to path-style for those)."""
    environ = os.environ if environ is None else environ
    url = next((environ[name] for name in ENDPOINT_VARIABLES if environ.get(name)), "")
    if url:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            name = next(n for n in ENDPOINT_VARIABLES if environ.get(n))
            raise StoreError(f"{name}={url!r} is not an http(s)://host[:port] URL", transient=False)
        return Endpoint(parts.netloc, parts.scheme == "https", path_style=True, url=url)
    host = f"s3.{region}.amazonaws.com"
    return Endpoint(host, tls=True, path_style="." in bucket, url=f"https://{host}")


def error_code(exc: AwsCrtError) -> str:
    """S3's error code (NoSuchBucket, AccessDenied, ...) from an error answer, else the CRT error name."""
    body = getattr(exc, "body", None)
    match = _ERROR_CODE.search(body) if isinstance(body, bytes) else None
    return match.group(1).decode(errors="replace") if match else exc.name


class CrtS3Store(S3Bucket):
    def __init__(self, bucket: str, prefix: str = "", *, max_connections: int = 10,
                 environ: Mapping[str, str] | None = None, **encryption: Unpack[Encryption]) -> None:
        super().__init__(bucket, prefix, **encryption)
        self.region = resolve_region(environ)
        self.endpoint = resolve_endpoint(bucket, self.region, environ)
        self._fixed_headers = [("Host", self.endpoint.host_for(bucket)), *self.encryption_headers.items()]
        self._checksum = s3.S3ChecksumConfig(algorithm=s3.S3ChecksumAlgorithm.CRC32,
                                             location=s3.S3ChecksumLocation.HEADER)
        # The client's event loop (one thread), for an MQTT client to share (see the processor's runner).
        self._client, self.bootstrap = _make_client(self.region, self.endpoint, max_connections)
        self._overdue = _Deadlines(PUT_TIMEOUT_SECONDS)

    def describe(self) -> str:
        return f"s3://{self.bucket}/{self.prefix} via {self.endpoint.url} (awscrt)"

    def put(self, key: str, body: bytes, content_type: str, metadata: Mapping[str, str]) -> None:
        # Through start_put, so a blocking put (the processor's retries) is watched like the others: cancelled
        # when overdue, and by cancel_started when the processor stops and gives up on it.
        outcome: Future[StoreError | None] = Future()
        self.start_put(key, body, content_type, metadata, outcome.set_result)
        try:
            error = outcome.result(PUT_TIMEOUT_SECONDS + _DEADLINE_SLACK_SECONDS)
        except FutureTimeout as exc:  # the deadline thread cancels it well before: a safety net only
            raise _no_answer(self.where(self.full_key(key))) from exc
        if error is not None:
            raise error

    def start_put(self, key: str, body: bytes, content_type: str, metadata: Mapping[str, str],
                  done: PutDone) -> None:
        """Start a put and return at once; `done` gets None or the StoreError on the client's event-loop
        thread once S3 answered (or after PUT_TIMEOUT_SECONDS without an answer, when it is cancelled)."""
        try:
            full_key = self.full_key(key)
        except StoreError as exc:  # an unsafe key: reported as a failed put, like any other
            done(exc)
            return
        where = self.where(full_key)
        token = object()

        def finished(error: Exception | None = None, **_: Any) -> None:
            overdue = not self._overdue.forget(token)
            if error is None:
                done(None)
            else:
                done(_no_answer(where) if overdue else _store_error(error, where))

        try:
            self._overdue.watch(token, lambda: self._request(full_key, body, content_type, metadata,
                                                              where=where, on_done=finished))
        except StoreError as exc:  # refused before it started
            done(exc)

    def cancel_started(self) -> None:
        self._overdue.cancel_all()

    def _request(self, full_key: str, body: bytes, content_type: str, metadata: Mapping[str, str], *,
                 where: str, on_done: Callable[..., None] | None = None) -> s3.S3Request:
        headers = http.HttpHeaders([
            *self._fixed_headers,
            ("Content-Type", content_type),
            ("Content-Length", str(len(body))),
            *((f"x-amz-meta-{name}", value) for name, value in s3_metadata(metadata).items()),
        ])
        request = http.HttpRequest("PUT", self.endpoint.object_path(self.bucket, full_key), headers, _Body(body))
        try:
            return self._client.make_request(type=s3.S3RequestType.PUT_OBJECT, request=request,
                                             checksum_config=self._checksum, on_headers=_on_headers,
                                             on_done=on_done)
        except AwsCrtError as exc:  # refused before it started (e.g. out of memory in the client)
            raise StoreError(f"{where}: {exc}") from exc


def _no_answer(where: str) -> StoreError:
    return StoreError(f"{where}: no answer within {PUT_TIMEOUT_SECONDS:g} s")


def _store_error(exc: Exception, where: str) -> StoreError:
    if isinstance(exc, s3.S3ResponseError):
        code = error_code(exc)
        return StoreError(f"{where}: {code} (HTTP {exc.status_code})", transient=code not in PERMANENT_CODES)
    if isinstance(exc, AwsCrtError):  # connection refused, TLS, credentials not found, ...
        return StoreError(f"{where}: {exc}", transient=exc.name not in _PERMANENT_CRT_ERRORS)
    return StoreError(f"{where}: {exc!r}")


# Failures of the client itself that retrying will not fix alone (still retried by the processor).
_PERMANENT_CRT_ERRORS = {"AWS_AUTH_CREDENTIALS_PROVIDER_CHAIN_SOURCES_EXHAUSTED"}


def _make_client(region: str, endpoint: Endpoint, max_connections: int) -> tuple[s3.S3Client, crtio.ClientBootstrap]:
    # One event-loop thread is plenty for tens of connections of small puts and keeps the process small.
    loops = crtio.EventLoopGroup(1)
    bootstrap = crtio.ClientBootstrap(loops, crtio.DefaultHostResolver(loops))
    credentials = auth.AwsCredentialsProvider.new_default_chain(bootstrap)
    client = s3.S3Client(
        bootstrap=bootstrap,
        region=region,
        credential_provider=credentials,
        tls_mode=s3.S3RequestTlsMode.ENABLED if endpoint.tls else s3.S3RequestTlsMode.DISABLED,
        max_active_connections_override=max_connections,
        retry_config=s3.S3RetryConfig(max_retries=CLIENT_RETRIES),
        connect_timeout_ms=CONNECT_TIMEOUT_MS,
    )
    return client, bootstrap


def _on_headers(**_: Any) -> None:
    # The answer's headers, the answer and the request's end are delivered on the client's event-loop
    # thread, another than the one that reads the body.
    keep_thread_state()


class _Deadlines:
    """Cancels started puts that have no answer after `seconds` (the CRT client has no read timeout).

    A put is watched from before it starts, so an answer that comes before make_request returns still
    finds it. One thread, started with the first put, checks every second for the rest of the process."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._lock = threading.Lock()
        self._watched: dict[object, tuple[float, s3.S3Request | None]] = {}
        self._thread: threading.Thread | None = None

    def watch(self, token: object, start: Callable[[], s3.S3Request]) -> None:
        deadline = time.monotonic() + self.seconds
        with self._lock:
            self._watched[token] = (deadline, None)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="s3-deadlines", daemon=True)
                self._thread.start()
        try:
            request = start()
        except BaseException:
            self.forget(token)
            raise
        with self._lock:
            if token in self._watched:
                self._watched[token] = (deadline, request)

    def forget(self, token: object) -> bool:
        """Stop watching; False if the put had already been cancelled as overdue."""
        with self._lock:
            return self._watched.pop(token, None) is not None

    def cancel_all(self) -> None:
        """Cancel every started put now (the processor gave up on them at its stop). They stay watched, so
        each fails as cancelled, not as 'no answer within 30 s'."""
        with self._lock:
            started = [request for _, request in self._watched.values() if request is not None]
        for request in started:
            request.cancel()

    def _run(self) -> None:
        while True:
            time.sleep(1.0)
            now = time.monotonic()
            with self._lock:
                overdue = [(token, request) for token, (deadline, request) in self._watched.items()
                           if deadline <= now and request is not None]
                for token, _ in overdue:
                    del self._watched[token]
            for _, request in overdue:
                request.cancel()


class _Body(io.BytesIO):
    """A request body that keeps the Python state of the awscrt thread that reads it (see threadstate)."""

    def readinto1(self, buffer: Any) -> int:
        keep_thread_state()
        return super().readinto1(buffer)
