"""Reading back what the processor stored, for the demo summary, the gallery, the end-to-end tests and the
pipeline benchmark. The processor itself only ever writes."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from ...contract import parse_time
from ...storage import parse_store_url
from ...storage.files import SIDECAR_SUFFIX


@dataclass(frozen=True)
class StoredObject:
    key: str  # relative to the store URL's root or prefix
    size: int
    content_type: str
    metadata: dict[str, str] = field(default_factory=dict)
    # Epoch seconds: the file's mtime. None in S3, whose LastModified has whole seconds (a face stored 300 ms
    # after its capture could show as stored before it).
    stored_at: float | None = None

    @property
    def face_id(self) -> str:
        """From the metadata, else from the key (`.../<captured-at>_<face-id>.<ext>`, storage/keys.py), so a
        listing without metadata (one request instead of one per object) still knows each face."""
        if "face-id" in self.metadata:
            return self.metadata["face-id"]
        stem = self.key.rsplit("/", 1)[-1].rsplit(".", 1)[0]
        return stem.rsplit("_", 1)[1] if "_" in stem else ""

    @property
    def captured_at(self) -> datetime | None:
        text = self.metadata.get("captured-at")
        return parse_time(text) if text else None


@dataclass(frozen=True)
class Inventory:
    faces: list[StoredObject]
    quarantined: list[StoredObject]


def read_inventory(store_url: str, quarantine_prefix: str = "quarantine", s3_client: Any = None,
                   with_metadata: bool = True) -> Inventory:
    location = parse_store_url(store_url)
    if location.scheme == "file":
        objects = _file_objects(location.root)
    else:
        objects = _s3_objects(s3_client, location.bucket, location.prefix, with_metadata)
    quarantine = quarantine_prefix.strip("/") + "/"
    return Inventory(faces=[o for o in objects if not o.key.startswith(quarantine)],
                     quarantined=[o for o in objects if o.key.startswith(quarantine)])


def read_body(store_url: str, key: str, s3_client: Any = None) -> bytes:
    location = parse_store_url(store_url)
    if location.scheme == "file":
        return location.root.joinpath(*key.split("/")).read_bytes()
    full = f"{location.prefix}/{key}" if location.prefix else key
    body: bytes = s3_client.get_object(Bucket=location.bucket, Key=full)["Body"].read()
    return body


def _file_objects(root: Path) -> list[StoredObject]:
    if not root.is_dir():
        return []
    objects = []
    for path in sorted(root.rglob("*")):
        # Skip folders, metadata sidecars and the store's temporary files (".name.xxxx.tmp").
        if not path.is_file() or path.name.endswith(SIDECAR_SUFFIX) or path.name.startswith("."):
            continue
        sidecar = path.with_name(path.name + SIDECAR_SUFFIX)
        info: dict[str, Any] = json.loads(sidecar.read_text("utf-8")) if sidecar.exists() else {}
        stat = path.stat()
        objects.append(StoredObject(
            key=path.relative_to(root).as_posix(), size=stat.st_size,
            content_type=str(info.get("contentType", "")), metadata=dict(info.get("metadata", {})),
            stored_at=stat.st_mtime))
    return objects


def _s3_objects(client: Any, bucket: str, prefix: str, with_metadata: bool) -> list[StoredObject]:
    objects = []
    start = f"{prefix}/" if prefix else ""
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=start):
        for item in page.get("Contents", []):
            metadata: dict[str, str] = {}
            content_type = ""
            if with_metadata:
                head = client.head_object(Bucket=bucket, Key=item["Key"])
                metadata, content_type = head.get("Metadata", {}), head.get("ContentType", "")
            objects.append(StoredObject(
                key=item["Key"][len(start):], size=int(item["Size"]), content_type=content_type,
                metadata=metadata))
    return objects
