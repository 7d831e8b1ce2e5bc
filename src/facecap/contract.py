"""The face message contract, version 1 (docs/contract.md).

A face travels as one MQTT 5 PUBLISH: the topic names the device and camera, the payload is the encoded
crop itself (JPEG or PNG), and user properties carry the metadata. Everything here is pure: building a
message, parsing and validating a received one, and making face ids.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone

from .errors import ContractError

SCHEMA = "facecap/1"
DEFAULT_TOPIC_PREFIX = "faces"
# Mosquitto's message_size_limit on both brokers is derived from this, so the bridge never drops a face.
DEFAULT_MAX_PAYLOAD_BYTES = 1024 * 1024

_TOPIC_LEVEL = re.compile(r"^[A-Za-z0-9._-]+$")
ID_PATTERN = re.compile(r"^[A-Za-z0-9._-]{1,64}$")  # use with fullmatch: "$" alone lets a final "\n" through
# Names the system uses itself, which no device may have (cloud/scripts/common.sh keeps the same list, and
# add-device.sh refuses them): the processor's user name, the store's quarantine folder, the compose service
# name in the broker's certificate, and - compared without case - every name starting with "facecap": the
# processor's client ids (facecap-processor...), the bridges' (facecap-edge-...), which share the broker's
# client-id space with the devices, and the first level of the facecap/<id>/... topics.
RESERVED_IDS = frozenset({"processor", "quarantine", "broker"})
RESERVED_ID_PREFIX = "facecap"
JPEG = "image/jpeg"
PNG = "image/png"
EXTENSIONS = {JPEG: "jpg", PNG: "png"}

_JPEG_MAGIC = b"\xff\xd8\xff"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_FACE_ID = re.compile(r"^[0-9A-HJKMNP-TV-Z]{26}$")
_RFC3339_MS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")

PROPERTY_NAMES = (
    "schema", "face-id", "device-id", "camera-id", "captured-at", "frame",
    "bbox", "score", "track-id", "detector", "sha256",
)
# Contract v1.1 adds optional properties: messages without them (v1) still parse.
OPTIONAL_PROPERTY_NAMES = ("shot",)
# `shot`: which shot of a track this is. `first`: sent as soon as the track had a good shot; `best`:
# the best shot of the track (when it ends, or a better one while it lasts).
SHOT_KINDS = ("first", "best")


# --- ids ------------------------------------------------------------------------------------------------

class FaceIdGenerator:
    """ULID-style ids: 48 bits of milliseconds then 80 random bits, Crockford base32, 26 characters.

    Lexical order is time order. Within one millisecond the random part is incremented, so ids made by
    one generator are strictly increasing even when the clock stands still or steps back.
    """

    def __init__(self, clock_ms: object = None) -> None:
        self._clock = clock_ms if callable(clock_ms) else (lambda: time.time_ns() // 1_000_000)
        self._lock = threading.Lock()
        self._last_ms = -1
        self._last_random = 0

    def new(self) -> str:
        with self._lock:
            now = int(self._clock())
            if now <= self._last_ms:
                now = self._last_ms
                self._last_random = (self._last_random + 1) & ((1 << 80) - 1)
                if self._last_random == 0:  # 2^80 ids in one ms: borrow the next millisecond
                    now += 1
            else:
                self._last_random = int.from_bytes(os.urandom(10), "big")
            self._last_ms = now
            value = (now << 80) | self._last_random
        return "".join(_CROCKFORD[(value >> shift) & 31] for shift in range(125, -1, -5))


_default_ids = FaceIdGenerator()


def new_face_id() -> str:
    return _default_ids.new()


def face_id_time(face_id: str) -> datetime:
    """The creation time encoded in a face id."""
    value = 0
    for char in face_id:
        value = value * 32 + _CROCKFORD.index(char)
    return datetime.fromtimestamp((value >> 80) / 1000, tz=timezone.utc)


def check_id(kind: str, value: str) -> str:
    """Device and camera ids become topic levels and object key parts: keep them to a safe alphabet."""
    if not ID_PATTERN.fullmatch(value) or value in (".", ".."):
        raise ContractError(f"bad-{kind}", f"{kind} {value!r} must match [A-Za-z0-9._-]{{1,64}} and not be . or ..")
    return value


def check_device_id(value: str) -> str:
    """A device id: the id alphabet, and none of the names the system keeps for itself (the processor's
    client ids start with facecap; quarantine and the others are key prefixes)."""
    check_id("device-id", value)
    if is_reserved_id(value):
        raise ContractError("reserved-device-id", f"device id {value!r} is reserved for the system's own use "
                                                  f"(it starts with {RESERVED_ID_PREFIX!r} or is one of "
                                                  f"{', '.join(sorted(RESERVED_IDS))})")
    return value


def check_topic_prefix(value: str) -> str:
    """A topic prefix is one or more levels of the id alphabet: no wildcards, no empty, . or .. levels, so
    that every component (and the processor's object keys) reads the same topics."""
    if not all(_TOPIC_LEVEL.fullmatch(level) and level not in (".", "..") for level in value.split("/")):
        raise ValueError("must be one or more topic levels of [A-Za-z0-9._-] separated by /, without wildcards, "
                         "empty levels, . or .. (e.g. faces)")
    return value


def status_topic(device_id: str, component: str) -> str:
    """Where a component publishes its retained online/offline status."""
    return f"facecap/{device_id}/{component}/status"


def stats_topic(device_id: str, component: str) -> str:
    """Where a component publishes its retained periodic stats (JSON): the cloud reads device health there."""
    return f"facecap/{device_id}/{component}/stats"


def is_reserved_id(value: str) -> bool:
    lowered = value.lower()
    return lowered in RESERVED_IDS or lowered.startswith(RESERVED_ID_PREFIX)


def format_time(moment: datetime) -> str:
    """RFC 3339 UTC with milliseconds, e.g. 2026-11-22T21:56:25.123Z."""
    utc = moment.astimezone(timezone.utc)
    # Fields, not strftime: formatted for every stored face, and strftime costs several times more.
    return (f"{utc.year:04d}-{utc.month:02d}-{utc.day:02d}T{utc.hour:02d}:{utc.minute:02d}:{utc.second:02d}"
            f".{utc.microsecond // 1000:03d}Z")


def parse_time(text: str) -> datetime:
    if not _RFC3339_MS.fullmatch(text):
        raise ContractError("bad-property", f"captured-at {text!r} is not RFC 3339 UTC with milliseconds")
    try:
        # The pattern fixed the form (ending in Z); fromisoformat checks the values (month 13, 30 February) at
        # a fiftieth of strptime's cost (16 us a face). It reads a Z only from Python 3.11, and a Jetson's
        # JetPack 6 has 3.10: the Z is UTC, said the other way.
        return datetime.fromisoformat(text[:-1]).replace(tzinfo=timezone.utc)
    except ValueError as exc:
        raise ContractError("bad-property", f"captured-at {text!r}: {exc}") from None


def sniff_content_type(payload: bytes) -> str | None:
    if payload.startswith(_JPEG_MAGIC):
        return JPEG
    if payload.startswith(_PNG_MAGIC):
        return PNG
    return None


def face_topic(device_id: str, camera_id: str, prefix: str = DEFAULT_TOPIC_PREFIX) -> str:
    return f"{prefix}/{check_id('device-id', device_id)}/{check_id('camera-id', camera_id)}"


# --- the message ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class FaceMetadata:
    """What the detector knows about a crop when it publishes it."""

    device_id: str
    camera_id: str
    captured_at: datetime
    bbox: tuple[int, int, int, int]
    score: float
    frame: int = 0
    track_id: str = ""
    detector: str = ""
    face_id: str = field(default_factory=new_face_id)
    shot: str = ""  # "", or one of SHOT_KINDS


@dataclass(frozen=True)
class OutgoingFace:
    """A face message ready for the MQTT layer."""

    topic: str
    payload: bytes
    content_type: str
    user_properties: tuple[tuple[str, str], ...]

    @property
    def face_id(self) -> str:
        return dict(self.user_properties)["face-id"]


@dataclass(frozen=True)
class FaceMessage:
    """A received face message that passed validation."""

    topic: str
    payload: bytes
    content_type: str
    face_id: str
    device_id: str
    camera_id: str
    sha256: str
    captured_at: datetime | None
    bbox: tuple[int, int, int, int] | None = None
    score: float | None = None
    frame: int | None = None
    track_id: str | None = None
    detector: str | None = None
    legacy: bool = False  # a bare image without contract properties
    shot: str | None = None  # contract v1.1: "first" or "best"; None from older publishers

    @property
    def extension(self) -> str:
        return EXTENSIONS[self.content_type]

    def properties(self) -> dict[str, str]:
        """The contract properties as strings, e.g. for object metadata."""
        props = {"schema": SCHEMA, "face-id": self.face_id, "device-id": self.device_id,
                 "camera-id": self.camera_id, "sha256": self.sha256}
        if self.captured_at is not None:
            props["captured-at"] = format_time(self.captured_at)
        if self.bbox is not None:
            props["bbox"] = ",".join(str(v) for v in self.bbox)
        if self.score is not None:
            props["score"] = f"{self.score:.4f}"
        if self.frame is not None:
            props["frame"] = str(self.frame)
        if self.track_id:
            props["track-id"] = self.track_id
        if self.detector:
            props["detector"] = self.detector
        if self.shot:
            props["shot"] = self.shot
        if self.legacy:
            props["schema"] = "legacy"
        return props


def build_message(
    payload: bytes,
    meta: FaceMetadata,
    *,
    topic_prefix: str = DEFAULT_TOPIC_PREFIX,
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
) -> OutgoingFace:
    """Wrap an encoded crop in contract v1. Raises ContractError if the crop or ids are unfit to send."""
    content_type = sniff_content_type(payload)
    if content_type is None:
        raise ContractError("not-an-image", "payload is neither JPEG nor PNG")
    if len(payload) > max_payload_bytes:
        raise ContractError("too-large", f"payload is {len(payload)} bytes, limit {max_payload_bytes}")
    if not _FACE_ID.fullmatch(meta.face_id):
        raise ContractError("bad-face-id", f"face-id {meta.face_id!r} is not a 26-character ULID")
    if meta.shot:
        _check_shot(meta.shot)
    x, y, w, h = (int(v) for v in meta.bbox)
    props: list[tuple[str, str]] = [
        ("schema", SCHEMA),
        ("face-id", meta.face_id),
        ("device-id", check_id("device-id", meta.device_id)),
        ("camera-id", check_id("camera-id", meta.camera_id)),
        ("captured-at", format_time(meta.captured_at)),
        ("frame", str(int(meta.frame))),
        ("bbox", f"{x},{y},{w},{h}"),
        ("score", f"{float(meta.score):.4f}"),
        ("track-id", meta.track_id),
        ("detector", meta.detector),
        ("sha256", hashlib.sha256(payload).hexdigest()),
    ]
    if meta.shot:
        props.append(("shot", meta.shot))
    return OutgoingFace(face_topic(meta.device_id, meta.camera_id, topic_prefix), payload, content_type, tuple(props))


def _topic_ids(topic: str, prefix: str) -> tuple[str, str]:
    levels = topic.split("/")
    prefix_levels = prefix.split("/")
    if levels[: len(prefix_levels)] != prefix_levels:
        raise ContractError("bad-topic", f"topic {topic!r} is not under {prefix!r}")
    rest = levels[len(prefix_levels):]
    if len(rest) not in (1, 2):
        raise ContractError("bad-topic", f"topic {topic!r} is not {prefix}/<device-id>/<camera-id>")
    device = check_device_id(rest[0])
    camera = check_id("camera-id", rest[1]) if len(rest) == 2 else "default"
    return device, camera


def _parse_bbox(text: str) -> tuple[int, int, int, int]:
    parts = text.split(",")
    # ASCII digits, at most 9: int() refuses more than 4300 digits with a ValueError, not a contract error.
    if len(parts) != 4 or not all(re.fullmatch(r"-?[0-9]{1,9}", p.strip()) for p in parts):
        raise ContractError("bad-property", f"bbox {text!r} is not x,y,w,h in integer pixels")
    x, y, w, h = (int(p) for p in parts)
    if w <= 0 or h <= 0:
        raise ContractError("bad-property", f"bbox {text!r} has no area")
    return x, y, w, h


def _check_shot(text: str) -> str:
    if text not in SHOT_KINDS:
        raise ContractError("bad-property", f"shot {text!r} is not one of {', '.join(SHOT_KINDS)}")
    return text


def _parse_number(name: str, text: str, kind: type[int] | type[float]) -> float:
    try:
        return kind(text)
    except ValueError:
        raise ContractError("bad-property", f"{name} {text!r} is not a number") from None


def _check_payload(payload: bytes, content_type: str | None, max_payload_bytes: int) -> str:
    """The payload's content type, sniffed from its bytes; ContractError when it is too large, not an image,
    or not what the content type property says."""
    if len(payload) > max_payload_bytes:
        raise ContractError("too-large", f"payload is {len(payload)} bytes, limit {max_payload_bytes}")
    sniffed = sniff_content_type(payload)
    if sniffed is None:
        raise ContractError("not-an-image", f"payload of {len(payload)} bytes is neither JPEG nor PNG")
    if content_type and content_type != sniffed:
        raise ContractError("content-type-mismatch", f"content type {content_type!r} but payload is {sniffed}")
    return sniffed


def _check_properties(props: Mapping[str, str], digest: str, device: str, camera: str) -> None:
    """ContractError unless the v1 properties are complete and agree with the payload and the topic."""
    if props["schema"] != SCHEMA:
        raise ContractError("bad-schema", f"schema {props['schema']!r} is not {SCHEMA}")
    missing = [name for name in ("face-id", "captured-at", "sha256") if not props.get(name)]
    if missing:
        raise ContractError("missing-property", f"missing {', '.join(missing)}")
    face_id = props["face-id"]
    if not _FACE_ID.fullmatch(face_id):
        raise ContractError("bad-face-id", f"face-id {face_id!r} is not a 26-character ULID")
    if props["sha256"].lower() != digest:
        raise ContractError("sha256-mismatch", f"sha256 property {props['sha256']!r} but payload hashes to {digest}")
    for name, topic_value in (("device-id", device), ("camera-id", camera)):
        if name in props and props[name] != topic_value:
            raise ContractError(f"{name}-mismatch", f"{name} property {props[name]!r} but topic says {topic_value!r}")


def parse_message(
    topic: str,
    payload: bytes,
    content_type: str | None = None,
    user_properties: Sequence[tuple[str, str]] | Mapping[str, str] = (),
    *,
    topic_prefix: str = DEFAULT_TOPIC_PREFIX,
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
) -> FaceMessage:
    """Validate a received message and return it, or raise ContractError with a reason code.

    The device id is always the topic's: the cloud broker's ACL ties a device to its own topic, while a
    property is whatever the publisher wrote. A property that disagrees with the topic is rejected.
    """
    sniffed = _check_payload(payload, content_type, max_payload_bytes)
    device, camera = _topic_ids(topic, topic_prefix)
    digest = hashlib.sha256(payload).hexdigest()
    props = dict(user_properties)

    if "schema" not in props:
        # A bare image from an older publisher: the payload's hash is its identity.
        return FaceMessage(topic, payload, sniffed, digest, device, camera, digest, None, legacy=True)

    _check_properties(props, digest, device, camera)
    return FaceMessage(
        topic=topic,
        payload=payload,
        content_type=sniffed,
        face_id=props["face-id"],
        device_id=device,
        camera_id=camera,
        sha256=digest,
        captured_at=parse_time(props["captured-at"]),
        bbox=_parse_bbox(props["bbox"]) if props.get("bbox") else None,
        score=float(_parse_number("score", props["score"], float)) if props.get("score") else None,
        frame=int(_parse_number("frame", props["frame"], int)) if props.get("frame") else None,
        track_id=props.get("track-id") or None,
        detector=props.get("detector") or None,
        shot=_check_shot(props["shot"]) if props.get("shot") else None,
    )
