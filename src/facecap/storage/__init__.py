"""Where faces are stored: S3 (``s3://bucket/prefix``) or a local folder (``file:///path``).

Both stores overwrite an existing key with the same bytes, so a message delivered twice still makes one
object: idempotency comes from the key (see ``keys.face_key``), not from the store.
"""

from __future__ import annotations

from .base import Store, StoreError, StoreUrl, parse_store_url
from .keys import face_key, message_digest, quarantine_key

__all__ = [
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
) -> Store:
    """Open the store a URL names. boto3 is imported only for ``s3://``, so the file store stays light."""
    location = parse_store_url(url)
    if location.scheme == "s3":
        from .s3 import S3Store

        return S3Store(location.bucket, location.prefix, server_side_encryption=server_side_encryption,
                       kms_key_id=kms_key_id, max_connections=max_connections)
    from .files import FileStore

    return FileStore(location.root)
