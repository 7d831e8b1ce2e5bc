"""Object keys, as pure functions of the message, so every copy of a message lands on the same key.

Faces:       <prefix>/<device-id>/<YYYY>/<MM>/<DD>/<HH>/<captured-at>_<face-id>.<ext>
Legacy:      <prefix>/<device-id>/undated/<sha256>.<ext>            (bare images carry no capture time)
Quarantine:  <prefix>/<quarantine>/<YYYY>/<MM>/<DD>/<reason>/<digest>.bin   (+ <digest>.json record)

The capture time is written in the basic ISO 8601 form (20261122T215625.123Z): no colons, which some
file systems and tools mishandle, and it still sorts in time order. Date levels are UTC.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from datetime import datetime, timezone

from ..contract import FaceMessage, check_id, format_time

UNDATED = "undated"
_REASON = re.compile(r"[^a-z0-9-]+")


def join_key(*parts: str) -> str:
    return "/".join(part.strip("/") for part in parts if part.strip("/"))


def compact_time(moment: datetime) -> str:
    """The contract's time without its separators, e.g. 20261122T215625.123Z."""
    return format_time(moment).replace("-", "").replace(":", "")


def face_key(message: FaceMessage, prefix: str = "") -> str:
    """The key of a face. It depends only on what every copy of the message shares: the device id from
    the topic, the capture time and face id (or, for a legacy image, the payload's hash)."""
    # The device id comes from the topic and was checked when parsed; check again because this key
    # becomes a path in the file store.
    device = check_id("device-id", message.device_id)
    name_ext = message.extension
    if message.captured_at is None:
        return join_key(prefix, device, UNDATED, f"{message.sha256}.{name_ext}")
    utc = message.captured_at.astimezone(timezone.utc)
    name = f"{compact_time(utc)}_{message.face_id}.{name_ext}"
    return join_key(prefix, device, f"{utc.year:04d}", f"{utc.month:02d}", f"{utc.day:02d}", f"{utc.hour:02d}", name)


def reason_slug(reason: str) -> str:
    """A reason code as one safe key level (reason codes are already like this; other text is folded)."""
    return _REASON.sub("-", reason.lower()).strip("-")[:64] or "unknown"


def message_digest(topic: str, payload: bytes, content_type: str | None,
                   user_properties: Sequence[tuple[str, str]]) -> str:
    """sha256 over everything a rejected message carried, so two different rejected messages never share
    a quarantine key (the payload alone would: the same bytes can be sent on two bad topics), while
    every copy of one message does."""
    digest = hashlib.sha256()
    for text in (topic, content_type or "", *(f"{n}\0{v}" for n, v in user_properties)):
        encoded = text.encode("utf-8", "surrogatepass")
        digest.update(len(encoded).to_bytes(8, "big") + encoded)
    digest.update(payload)
    return digest.hexdigest()


def quarantine_key(prefix: str, received_at: datetime, reason: str, digest: str, suffix: str = "bin") -> str:
    """The key of a quarantined message. Dated by reception (UTC), since the message's own time may be
    missing or a lie; a redelivery on another UTC day lands a second copy, which the digest identifies."""
    utc = received_at.astimezone(timezone.utc)
    return join_key(prefix, f"{utc:%Y}", f"{utc:%m}", f"{utc:%d}", reason_slug(reason), f"{digest}.{suffix}")
