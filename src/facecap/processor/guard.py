"""Per-device bounds in the processor, so one device cannot crowd out the others: retained copies of faces
are ignored, each device's faces are counted, and faces above a device's rate ceiling are quarantined with
reason "rate" (kept, never lost, but not stored as faces). Also the clipping of untrusted text for logs."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from ..logs import KeyedThrottle
from ..mqtt import ReceivedMessage

log = logging.getLogger(__name__)

# Log lines carry text a device chose (topics, property values in error details); a 1 MB value must not
# push everything else out of the container's bounded log.
MAX_LOGGED_CHARS = 200
# Faces a device may send at once above its ceiling (its bucket's size): the most a detector has published
# and unconfirmed (outbox.maxUnconfirmed, 256) with room to spare. After an uplink outage or a processor
# restart the edge broker or the processor's session hands all of them over at once; an honest device
# must not see them quarantined as a flood. A sustained flood still empties the bucket.
DEFAULT_BURST_FACES = 300
# Devices remembered for the rate ceiling and the counts; more ids than this means something is wrong,
# and forgetting the quietest ones keeps the memory flat.
_MAX_DEVICES = 10_000
# A capture time no device can have had with its clock set: before facecap existed (a Jetson without a clock
# battery boots at 1970 or at its image's build date until NTP sets it), or ahead of the cloud's clock by
# more than clocks drift. A face captured long ago is fine: it may have waited in an outbox for days.
EARLIEST_CAPTURE = datetime(2026, 1, 1, tzinfo=timezone.utc)
MOST_AHEAD = timedelta(minutes=5)
# How often a device with a wrong clock is named in the log (the summary line counts its faces).
_CLOCK_LOG_SECONDS = 3600.0


def clip(text: str, limit: int = MAX_LOGGED_CHARS) -> str:
    """Text from a message, at most `limit` characters, with how much was cut."""
    if len(text) <= limit:
        return text
    return f"{text[:limit - 30]}... ({len(text)} characters)"


def device_of(topic: str, topic_prefix: str) -> str:
    """The device level of a face topic (the broker's ACL makes it the publisher's identity), or "" when
    the topic is not under the prefix (such a message is quarantined by the plan anyway)."""
    head = topic_prefix + "/"
    if not topic.startswith(head):
        return ""
    return topic[len(head):].split("/", 1)[0]


@dataclass
class _Bucket:
    tokens: float
    updated: float


@dataclass
class DeviceGuard:
    """Thread-safe: the processor's workers call it concurrently."""

    max_faces_per_second: float  # 0 disables the ceiling
    topic_prefix: str
    burst_faces: int = DEFAULT_BURST_FACES
    faces: Counter[str] = field(default_factory=Counter)  # every face message, per device, since start
    limited: Counter[str] = field(default_factory=Counter)  # quarantined with reason "rate"
    retained: Counter[str] = field(default_factory=Counter)  # ignored retained copies
    clock_wrong: Counter[str] = field(default_factory=Counter)  # faces stamped by a clock that was not set
    _clock_log: KeyedThrottle[str] = field(default_factory=lambda: KeyedThrottle(_CLOCK_LOG_SECONDS, _MAX_DEVICES))
    _buckets: dict[str, _Bucket] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def screen(self, message: ReceivedMessage, now: float | None = None) -> str:
        """"" to process the message, "retained" to ignore it, "rate" to quarantine it."""
        device = device_of(message.topic, self.topic_prefix)
        moment = time.monotonic() if now is None else now
        with self._lock:
            if len(self.faces) >= _MAX_DEVICES and device not in self.faces:
                self._forget_quietest()
            self.faces[device] += 1
            if message.retain:
                # A retained copy is resent on every new subscription; the face itself came live.
                self.retained[device] += 1
                if self.retained[device] == 1:
                    log.warning("ignoring retained face messages of device %s (first on %s)", clip(device),
                                clip(message.topic))
                return "retained"
            if self.max_faces_per_second > 0 and not self._take(device, moment):
                self.limited[device] += 1
                return "rate"
        return ""

    def _take(self, device: str, now: float) -> bool:
        capacity = float(max(1, self.burst_faces))
        bucket = self._buckets.get(device)
        if bucket is None:
            bucket = self._buckets[device] = _Bucket(capacity, now)
        bucket.tokens = min(capacity, bucket.tokens + (now - bucket.updated) * self.max_faces_per_second)
        bucket.updated = now
        if bucket.tokens < 1.0:
            return False
        bucket.tokens -= 1.0
        return True

    def check_clock(self, topic: str, captured_at: datetime | None, received_at: datetime) -> None:
        """Count, and now and then name, a device whose clock cannot have been set when it stamped this face:
        the face is kept, filed under the date it carries, where nobody browsing today's folders looks."""
        if captured_at is None or EARLIEST_CAPTURE <= captured_at <= received_at + MOST_AHEAD:
            return
        device = device_of(topic, self.topic_prefix)
        with self._lock:
            self.clock_wrong[device] += 1
        if self._clock_log.due(device) is None:
            return
        log.warning("device %s's clock is wrong: a face captured at %s arrived at %s; it is stored under the date "
                    "it carries (set the device's time: NTP)", clip(device), captured_at.isoformat(),
                    received_at.isoformat(timespec="seconds"))

    def _forget_quietest(self) -> None:
        for device, _count in self.faces.most_common()[-(_MAX_DEVICES // 10):]:
            for table in (self.faces, self.limited, self.retained, self.clock_wrong):
                table.pop(device, None)
            self._buckets.pop(device, None)

    def summary(self, top: int = 5) -> str:
        """Faces per device since start (the busiest first), and who was limited, sent retained faces or stamped
        faces with a clock that was not set."""
        with self._lock:
            busiest = self.faces.most_common(top)
            limited = self.limited.most_common(top)
            retained = self.retained.most_common(top)
            clock_wrong = self.clock_wrong.most_common(top)
            devices = len(self.faces)
        parts = [f"faces per device ({devices} devices): " + _pairs(busiest)]
        if limited:
            parts.append("over the rate ceiling: " + _pairs(limited))
        if retained:
            parts.append("retained ignored: " + _pairs(retained))
        if clock_wrong:
            parts.append("clock not set: " + _pairs(clock_wrong))
        return "; ".join(parts)


def _pairs(counts: list[tuple[str, int]]) -> str:
    return ", ".join(f"{clip(device, 64)}={count}" for device, count in counts) or "none"


# How often one device may put one quarantine reason in the log; the store keeps every message and the stats
# line counts them, so the log needs only the first of a flood and then its size.
QUARANTINE_LOG_SECONDS = 10.0


class QuarantineLog:
    """A warning per quarantined message would let one device write the log as fast as it publishes (and push
    everything else out of Docker's bounded log): each device and reason is logged at its first message, then
    at most once per `interval` with how many were not logged since."""

    def __init__(self, topic_prefix: str, interval: float = QUARANTINE_LOG_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._topic_prefix = topic_prefix
        self._throttle: KeyedThrottle[tuple[str, str]] = KeyedThrottle(interval, _MAX_DEVICES, clock)

    def note(self, topic: str, reason: str, detail: str) -> None:
        unlogged = self._throttle.due((device_of(topic, self._topic_prefix), reason))
        if unlogged is None:
            return
        since = f" ({unlogged} more like it from this device since its last line)" if unlogged else ""
        log.warning("quarantined a message on %s: %s: %s%s", clip(topic), reason, clip(detail), since)
