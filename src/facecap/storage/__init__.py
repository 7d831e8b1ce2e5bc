"""Where faces are stored: S3 (``s3://bucket/prefix``) or a local folder (``file:///path``).

Both stores overwrite an existing key with the same bytes, so a message delivered twice still makes one
object: idempotency comes from the key (see ``keys.face_key``), not from the store.
"""

from __future__ import annotations

from .base import AsyncStore, PutDone, Store, StoreError, StoreUrl, parse_store_url
from .keys import face_key, message_digest, quarantine_key

S3_CLIENTS = ("crt", "boto3")

__all__ = [
    "S3_CLIENTS",
    "AsyncStore",
    "PutDone",
    "Store",
    "StoreError",
    "StoreUrl",
    "face_key",
    "message_digest",
    "open_store",
    "parse_store_url",
    "quarantine_key",
]


def open_store(
    url: str,
    *,
    server_side_encryption: str = "AES256",
    kms_key_id: str = "",
    max_connections: int = 10,
    s3_client: str = "crt",
) -> Store:
    """Open the store a URL names. For ``s3://``, s3_client picks the client: "crt" (awscrt's native S3
    client, the default: about a quarter of boto3's CPU per face) or "boto3". Either library is imported
    only when chosen, so the file store stays light."""
    if s3_client not in S3_CLIENTS:
        raise ValueError(f"S3 client {s3_client!r} is not one of {S3_CLIENTS}")
    location = parse_store_url(url)
    if location.scheme == "s3" and s3_client == "crt":
        from .s3crt import CrtS3Store

        return CrtS3Store(location.bucket, location.prefix, server_side_encryption=server_side_encryption,
                          kms_key_id=kms_key_id, max_connections=max_connections)
    if location.scheme == "s3":
        from .s3 import S3Store

        return S3Store(location.bucket, location.prefix, server_side_encryption=server_side_encryption,
                       kms_key_id=kms_key_id, max_connections=max_connections)
    from .files import FileStore

    return FileStore(location.root)
