"""What the FaceLogger says about each message, and its periodic summary. No MQTT here: messages come in
as values and lines go out as text, so the wording and the counting are tested without a broker."""

from __future__ import annotations

import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..contract import DEFAULT_MAX_PAYLOAD_BYTES, DEFAULT_TOPIC_PREFIX, FaceMessage, parse_message
from ..errors import ContractError

# QoS 1 delivers some messages twice; remembering this many recent face ids is enough to mark them.
RECENT_IDS = 10_000


@dataclass(frozen=True)
class Verdict:
    """One log line about one message. accepted is False when the message breaks the contract."""

    accepted: bool
    line: str


def _quote(text: str) -> str:
    """A value that stays one token for grep and awk, whatever a publisher put in it."""
    clean = "".join(c if c.isprintable() else "?" for c in text)
    return clean if clean and " " not in clean and '"' not in clean else '"' + clean.replace('"', "'") + '"'


class FaceLog:
    """Turns messages into log lines and keeps the counts for the summary. Thread-safe: messages arrive on
    the MQTT dispatcher thread while the summary is taken on the main thread."""

    def __init__(
        self,
        *,
        topic_prefix: str = DEFAULT_TOPIC_PREFIX,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
        wall_clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._prefix = topic_prefix
        self._max_payload = max_payload_bytes
        self._wall_clock = wall_clock
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._recent: OrderedDict[str, None] = OrderedDict()
        self._window_start = monotonic()
        self._per_device: Counter[str] = Counter()
        self._rejected: Counter[str] = Counter()
        self._duplicates = 0
        self.total_faces = 0
        self.total_rejected = 0

    def handle(
        self,
        topic: str,
        payload: bytes,
        content_type: str | None,
        user_properties: Sequence[tuple[str, str]],
    ) -> Verdict:
        try:
            face = parse_message(topic, payload, content_type, user_properties,
                                 topic_prefix=self._prefix, max_payload_bytes=self._max_payload)
        except ContractError as exc:
            with self._lock:
                self._rejected[exc.reason] += 1
                self.total_rejected += 1
            return Verdict(False, f"rejected topic={_quote(topic)} bytes={len(payload)} reason={exc.reason} "
                                  f"detail={_quote(exc.detail)}")
        with self._lock:
            duplicate = face.face_id in self._recent
            self._remember(face.face_id)
            self._per_device[face.device_id] += 1
            self.total_faces += 1
            if duplicate:
                self._duplicates += 1
        return Verdict(True, self._face_line(face, duplicate))

    def _remember(self, face_id: str) -> None:
        self._recent[face_id] = None
        self._recent.move_to_end(face_id)
        if len(self._recent) > RECENT_IDS:
            self._recent.popitem(last=False)

    def _face_line(self, face: FaceMessage, duplicate: bool) -> str:
        parts = [f"face topic={_quote(face.topic)}", f"face-id={face.face_id}", f"device={face.device_id}",
                 f"camera={face.camera_id}", f"bytes={len(face.payload)}"]
        parts.append("bbox=" + (",".join(str(v) for v in face.bbox) if face.bbox else "-"))
        parts.append(f"score={face.score:.3f}" if face.score is not None else "score=-")
        if face.captured_at is not None:
            parts.append(f"age={self._wall_clock() - face.captured_at.timestamp():.3f}s")
        else:
            parts.append("age=-")
        if face.legacy:
            parts.append("legacy=true")
        if duplicate:
            parts.append("duplicate=true")
        return " ".join(parts)

    def summary(self) -> str:
        """The counts since the previous summary, as one line; starts a new window."""
        now = self._monotonic()
        with self._lock:
            elapsed = max(now - self._window_start, 1e-9)
            per_device, rejected, duplicates = self._per_device, self._rejected, self._duplicates
            self._per_device, self._rejected, self._duplicates = Counter(), Counter(), 0
            self._window_start = now
        faces = sum(per_device.values())
        minutes = elapsed / 60
        line = (f"summary faces={faces} seconds={elapsed:.1f} per-minute={faces / minutes:.1f} "
                f"duplicates={duplicates} rejected={sum(rejected.values())}")
        if per_device:
            line += " devices=" + ",".join(f"{device}:{count}({count / minutes:.1f}/min)"
                                           for device, count in sorted(per_device.items()))
        if rejected:
            line += " reasons=" + ",".join(f"{reason}:{count}" for reason, count in sorted(rejected.items()))
        return line
