"""The Store interface and store URLs."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable
from urllib.parse import urlsplit

from ..errors import FacecapError

# AWS's rules for new bucket names (lower case, digits, dots, hyphens; 3 to 63 characters).
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_PREFIX_PART = re.compile(r"^[A-Za-z0-9._-]+$")


class StoreError(FacecapError):
    """Writing to a store failed. `transient` is False when retrying is unlikely to help by itself
    (a missing bucket, access denied), which the caller logs louder but still retries."""

    def __init__(self, message: str, *, transient: bool = True) -> None:
        self.transient = transient
        super().__init__(message)


class Store(Protocol):
    """A place that keeps objects under keys. `put` either stores the whole object or raises StoreError;
    putting the same key again replaces the object (that is what makes redelivery harmless)."""

    def put(self, key: str, body: bytes, content_type: str, metadata: Mapping[str, str]) -> None: ...

    def describe(self) -> str: ...


PutDone = Callable[[StoreError | None], None]


@runtime_checkable
class AsyncStore(Store, Protocol):
    """A store that can also start a put without blocking: `done` is called once, with None or the
    StoreError, on a thread of the store's own (so it must not block either)."""

    def start_put(self, key: str, body: bytes, content_type: str, metadata: Mapping[str, str],
                  done: PutDone) -> None: ...

    def cancel_started(self) -> None:
        """Cancel every put started and not answered yet: each one's `done` gets a StoreError soon."""


@dataclass(frozen=True)
class StoreUrl:
    scheme: str  # "s3" or "file"
    bucket: str = ""
    prefix: str = ""
    root: Path = Path("/")


def check_key_parts(key: str) -> list[str]:
    """Split a relative key and refuse anything that could leave the store's root, or that would show
    differently from what it is: control characters (a newline in a file name) and bidi controls (U+202E
    makes "gpj.exe" read as "exe.jpg")."""
    parts = key.split("/")
    if key.startswith("/") or any(part in ("", ".", "..") for part in parts):
        raise StoreError(f"unsafe object key {key!r}", transient=False)
    # Printable ASCII (nearly every key) holds neither kind; only other keys are read character by character.
    clean = key.isascii() and key.isprintable()
    bad = None if clean else next((char for char in key if _is_control(char)), None)
    if bad is not None:
        raise StoreError(f"unsafe object key {key!r}: control character U+{ord(bad):04X}", transient=False)
    return parts


# Explicit embeddings, overrides and isolates, and the marks: none belongs in a key.
_BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def _is_control(char: str) -> bool:
    return unicodedata.category(char) == "Cc" or char in _BIDI_CONTROLS


def parse_store_url(url: str) -> StoreUrl:
    """``s3://bucket[/prefix]`` or ``file:///absolute/path``; ValueError says what is wrong."""
    parts = urlsplit(url)
    if parts.query or parts.fragment:
        raise ValueError(f"store URL {url!r} must not have a query or fragment")
    if parts.scheme == "s3":
        if not _BUCKET.fullmatch(parts.netloc):
            raise ValueError(f"{parts.netloc!r} is not a valid S3 bucket name (s3://bucket/prefix)")
        prefix = parts.path.strip("/")
        if prefix and not all(_PREFIX_PART.fullmatch(p) and p not in (".", "..") for p in prefix.split("/")):
            raise ValueError(f"prefix {prefix!r} may only hold [A-Za-z0-9._-] levels separated by /")
        return StoreUrl("s3", bucket=parts.netloc, prefix=prefix)
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise ValueError(f"file URL {url!r} names a host; use file:///absolute/path")
        if not parts.path.startswith("/") or ".." in parts.path.split("/"):
            raise ValueError(f"file URL {url!r} needs an absolute path without .. (file:///var/lib/faces)")
        return StoreUrl("file", root=Path(parts.path))
    raise ValueError(f"store URL {url!r} must start with s3:// or file://")
