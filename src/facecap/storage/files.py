"""A store in a local folder: each object is a file, its metadata a JSON file beside it (``<key>.json``).

Writes are atomic (a temporary file in the same folder, fsynced, then renamed over the key), so a reader
or a crash never sees half an object, and the file is on disk before the message is acknowledged.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Mapping
from pathlib import Path

from .base import StoreError, check_key_parts

SIDECAR_SUFFIX = ".json"


class FileStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def describe(self) -> str:
        return f"file://{self.root}"

    def path_of(self, key: str) -> Path:
        return self.root.joinpath(*check_key_parts(key))

    def put(self, key: str, body: bytes, content_type: str, metadata: Mapping[str, str]) -> None:
        path = self.path_of(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if metadata:
                # Sidecar first: once the object itself exists, its metadata does too.
                sidecar = {"contentType": content_type, "metadata": dict(metadata)}
                _write_atomically(path.with_name(path.name + SIDECAR_SUFFIX),
                                  json.dumps(sidecar, indent=1, sort_keys=True).encode("utf-8"))
            _write_atomically(path, body)
            _fsync_folder(path.parent)
        except OSError as exc:
            raise StoreError(f"cannot write {path}: {exc}") from exc

    def read_metadata(self, key: str) -> dict[str, object]:
        path = self.path_of(key)
        data: dict[str, object] = json.loads(path.with_name(path.name + SIDECAR_SUFFIX).read_text("utf-8"))
        return data


_FILE_MODE = 0o640


def _write_atomically(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        # 0640 at most (the umask may take more): faces are personal data, not for every local user.
        with os.fdopen(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, _FILE_MODE), "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _fsync_folder(folder: Path) -> None:
    # The rename is durable only once the folder entry is on disk.
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
