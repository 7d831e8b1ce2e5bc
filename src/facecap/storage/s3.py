"""A store in an S3 bucket through boto3.

boto3 finds everything the standard way: credentials from its default chain (environment, profile,
container or EC2 instance role; never keys in our configuration) and the endpoint from AWS_ENDPOINT_URL_S3
or AWS_ENDPOINT_URL (for S3-compatible servers). Only s3:PutObject is needed, so the instance role can be
that narrow.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypedDict
from urllib.parse import quote

from .base import StoreError, check_key_parts
from .keys import join_key

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from typing_extensions import Unpack

# S3 allows 2 KB of user metadata (names plus values); keep a margin for the truncation marker.
METADATA_BUDGET = 1900
TRUNCATED = "metadata-truncated"
SSE_MODES = ("", "AES256", "aws:kms")
SSE_HEADER = "x-amz-server-side-encryption"
SSE_KMS_KEY_HEADER = "x-amz-server-side-encryption-aws-kms-key-id"
# boto3 takes the encryption headers as named parameters of put_object.
_BOTO3_PARAMETERS = {SSE_HEADER: "ServerSideEncryption", SSE_KMS_KEY_HEADER: "SSEKMSKeyId"}
# Answers that retrying alone will not fix; still retried (a bucket can be created, a policy fixed).
PERMANENT_CODES = {"NoSuchBucket", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch",
                    "InvalidBucketName", "KMS.NotFoundException", "AllAccessDisabled"}


def s3_metadata(metadata: Mapping[str, str]) -> dict[str, str]:
    """Metadata as S3 accepts it: names lower case from [a-z0-9-_], values printable ASCII (others are
    percent-encoded UTF-8), at most 2 KB in all. What does not fit is left out and marked, in order, so
    callers put the important entries first."""
    result: dict[str, str] = {}
    used = 0
    for raw_name, raw_value in metadata.items():
        name = "".join(c if c.isascii() and (c.isalnum() or c in "-_") else "-" for c in raw_name.lower())
        value = raw_value if raw_value.isascii() and raw_value.isprintable() else quote(raw_value, safe="")
        if not name or name in result:
            continue
        if used + len(name) + len(value) > METADATA_BUDGET:
            result[TRUNCATED] = "true"
            break
        result[name] = value
        used += len(name) + len(value)
    return result


class S3Bucket:
    """What both S3 stores (boto3 and awscrt) share: the bucket, the key prefix below it and the
    server-side encryption, checked once, as the S3 request headers that ask for it."""

    def __init__(self, bucket: str, prefix: str = "", *, server_side_encryption: str = "AES256",
                 kms_key_id: str = "") -> None:
        if server_side_encryption not in SSE_MODES:
            raise ValueError(f"server-side encryption {server_side_encryption!r} is not one of {SSE_MODES}")
        self.bucket = bucket
        self.prefix = prefix
        self.encryption_headers: dict[str, str] = {}
        if server_side_encryption:
            self.encryption_headers[SSE_HEADER] = server_side_encryption
        if server_side_encryption == "aws:kms" and kms_key_id:
            self.encryption_headers[SSE_KMS_KEY_HEADER] = kms_key_id

    def full_key(self, key: str) -> str:
        check_key_parts(key)
        return join_key(self.prefix, key)

    def where(self, full_key: str) -> str:
        """The object's address, as errors name it."""
        return f"s3://{self.bucket}/{full_key}"


class Encryption(TypedDict, total=False):
    """The encryption keywords of S3Bucket, which both stores pass on to it."""

    server_side_encryption: str
    kms_key_id: str


class S3Store(S3Bucket):
    def __init__(self, bucket: str, prefix: str = "", *, max_connections: int = 10, client: S3Client | None = None,
                 **encryption: Unpack[Encryption]) -> None:
        super().__init__(bucket, prefix, **encryption)
        self._encryption: dict[str, Any] = {_BOTO3_PARAMETERS[name]: value
                                            for name, value in self.encryption_headers.items()}
        self._client = client or _make_client(max_connections)

    def describe(self) -> str:
        endpoint = self._client.meta.endpoint_url
        return f"s3://{self.bucket}/{self.prefix} via {endpoint}"

    def put(self, key: str, body: bytes, content_type: str, metadata: Mapping[str, str]) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        full_key = self.full_key(key)
        try:
            self._client.put_object(Bucket=self.bucket, Key=full_key, Body=body, ContentType=content_type,
                                    Metadata=s3_metadata(metadata), **self._encryption)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            raise StoreError(f"{self.where(full_key)}: {exc}", transient=code not in PERMANENT_CODES) from exc
        except BotoCoreError as exc:  # connection refused, timeouts, credentials not found, ...
            raise StoreError(f"{self.where(full_key)}: {exc}") from exc


def _make_client(max_connections: int) -> S3Client:
    import boto3
    from botocore.config import Config

    config = Config(
        # One quick retry inside boto3; longer outages are the processor's exponential backoff, which
        # keeps the message unacknowledged meanwhile.
        retries={"total_max_attempts": 2, "mode": "standard"},
        connect_timeout=5,
        read_timeout=30,
        # One connection per worker, or urllib3 discards connections and reconnects all the time.
        max_pool_connections=max_connections,
    )
    client: S3Client = boto3.session.Session().client("s3", config=config)
    # botocore asks S3 for "100 Continue" before every PutObject body: a round trip more per face, for
    # bodies of tens of KB that S3 takes in one go (on the local S3 server, one worker then made 0 - 25 %
    # more puts per second in six runs). The body's integrity is still checked (botocore's CRC32 header).
    # (botocore adds the header in a "before-call.s3" handler; register_last runs after it.)
    client.meta.events.register_last("before-call.s3", _without_expect_continue)
    return client


def _without_expect_continue(model: Any, params: dict[str, Any], **_: Any) -> None:
    if model.name == "PutObject":
        params["headers"].pop("Expect", None)
