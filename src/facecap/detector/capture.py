"""The capture loop: frame -> faces -> tracker -> crops -> publisher, plus the periodic stats line.

Everything runs on the calling thread except publishing (the MQTT client's threads) and the stats
reporter, so a frame is either fully processed or not at all, and nothing here waits for the broker.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime

from ..contract import FaceMetadata
from ..logs import Throttle
from .camera import Frame
from .crop import CropSettings, Image, cut_crop, encode, face_region, is_cut, sharpness, shot_quality
from .detection import Detection, FaceDetector
from .publisher import FacePublisher
from .tracking import Box, Candidate, Emission, Tracker

log = logging.getLogger(__name__)

_REFUSAL_LOG_SECONDS = 60.0

# The `shot` property (contract v1.1) per tracker decision; `every` mode's messages carry none.
SHOT_KIND = {"first": "first", "end": "best", "resend": "best", "every": ""}


@dataclass(frozen=True)
class Shot:
    """A face as it will be sent: the padded crop and what the message says about it."""

    crop: Image
    bbox: Box
    score: float
    frame: int
    captured_at: datetime


def keep_shot(shot: Shot) -> Shot:
    # The crop is a view into the frame; a kept best shot must not pin the whole frame in memory.
    return replace(shot, crop=shot.crop.copy())


@dataclass
class LoopStats:
    frames: int = 0
    faces: int = 0  # detections at least min_face_size, summed over frames
    sent: int = 0  # crops handed to the publisher
    encode_failures: int = 0


@dataclass(kw_only=True)
class CaptureLoop:
    detector: FaceDetector
    tracker: Tracker[Shot]
    publisher: FacePublisher
    crop_settings: CropSettings
    device_id: str
    camera_id: str
    min_face_size: int
    edge_margin: int
    stats: LoopStats = field(default_factory=LoopStats, init=False)
    last_timestamp: float | None = field(default=None, init=False)  # of the last frame processed
    frame_gap: float = field(default=0.0, init=False)  # seconds between the last two frames processed
    _refusal_log: Throttle = field(default_factory=lambda: Throttle(_REFUSAL_LOG_SECONDS), init=False)

    def run(self, frames: Iterable[Frame]) -> None:
        """Process frames until the source ends or stops, then send what the open tracks still hold."""
        try:
            for frame in frames:
                self.process(frame)
        finally:
            self.finish()

    def finish(self) -> None:
        """Send what the open tracks still hold (the camera ended or the detector stops)."""
        self._send(self.tracker.finish())

    def expire(self, now: float) -> None:
        """End the tracks not seen for `lostAfterSeconds` by `now` without a frame (a live camera that went
        silent), and send their best shots."""
        self._send(self.tracker.update([], now))

    def process(self, frame: Frame, detector: FaceDetector | None = None) -> None:
        """One frame through detection and tracking. `detector`: the calling worker's own model (a model
        must not be shared between threads); default the loop's."""
        found = (detector or self.detector).detect(frame.image)
        candidates = [self._candidate(frame, detection) for detection in found
                      if min(detection.bbox[2], detection.bbox[3]) >= self.min_face_size]
        self.stats.frames += 1
        self.stats.faces += len(candidates)
        if self.last_timestamp is not None:
            self.frame_gap = max(0.0, frame.timestamp - self.last_timestamp)
        self.last_timestamp = frame.timestamp
        refused = self.tracker.stats.tracks_refused
        self._send(self.tracker.update(candidates, frame.timestamp))
        if self.tracker.stats.tracks_refused > refused and self._refusal_log.due():
            log.warning("camera %s: more faces than tracking.maxTracks (%d) in view; the others are not followed "
                        "or sent (%d detections so far)", self.camera_id, self.tracker.settings.max_tracks,
                        self.tracker.stats.tracks_refused)

    def _candidate(self, frame: Frame, detection: Detection) -> Candidate[Shot]:
        image = frame.image
        height, width = image.shape[:2]
        settings = self.tracker.settings
        _, _, w, h = detection.bbox
        quality, presentable = 0.0, False
        if settings.mode == "best":  # `every` mode sends everything: no need to rank
            cut = is_cut(detection.bbox, width, height, self.edge_margin)
            sharp = sharpness(face_region(image, detection.bbox))
            quality = shot_quality(sharp, min(w, h), detection.score, cut)
            # The first-shot gate; size is already at least min_face_size.
            presentable = (settings.first_shot and not cut and detection.score >= settings.first_shot_min_score
                           and sharp >= settings.first_shot_min_sharpness)
        shot = Shot(cut_crop(image, detection.bbox, self.crop_settings.padding), detection.bbox,
                    detection.score, frame.index, frame.captured_at)
        return Candidate(detection.bbox, detection.score, quality, shot, presentable)

    def _send(self, emissions: list[Emission[Shot]]) -> None:
        for emission in emissions:
            shot = emission.candidate.shot
            try:
                payload = encode(shot.crop, self.crop_settings)
            except ValueError as exc:
                self.stats.encode_failures += 1
                log.warning("cannot encode the crop of track %s: %s", emission.track_id, exc)
                continue
            x, y, w, h = shot.bbox
            meta = FaceMetadata(
                device_id=self.device_id,
                camera_id=self.camera_id,
                captured_at=shot.captured_at,
                bbox=(round(x), round(y), max(1, round(w)), max(1, round(h))),
                score=shot.score,
                frame=shot.frame,
                track_id=emission.track_id,
                detector=self.detector.name,
                shot=SHOT_KIND[emission.reason],
            )
            if self.publisher.submit(payload, meta):
                self.stats.sent += 1
            log.debug("face %s track %s (%s) frame %d bbox %s", meta.face_id, emission.track_id,
                      emission.reason, shot.frame, meta.bbox)


class StatsReporter:
    """Logs `stats:` lines of key=value pairs every interval, from its own thread, so the figures keep
    coming while a camera or the broker is away, and hands the last line (the whole detector's) with every
    camera's line to `publish` (device health). `collect` gives one dict per line; a line's fps is computed
    from its `frames` since the last report, per line (per camera). `interval` is read at each round, so a
    live configuration change takes effect at the next one."""

    def __init__(self, interval: float | Callable[[], float], collect: Callable[[], list[dict[str, object]]],
                 clock: Callable[[], float] = time.monotonic,
                 publish: Callable[[dict[str, object]], None] | None = None) -> None:
        self._interval = interval if callable(interval) else (lambda: interval)
        self._collect = collect
        self._publish = publish
        self._clock = clock
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="detector-stats", daemon=True)
        self._last_frames: dict[int, int] = {}
        self._last_time = clock()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def report(self) -> None:
        lines = self._collect()
        now = self._clock()
        elapsed = now - self._last_time
        self._last_time = now
        published: list[dict[str, object]] = []
        for number, figures in enumerate(lines):
            frames = int(str(figures.get("frames", 0)))
            fps = (frames - self._last_frames.get(number, 0)) / elapsed if elapsed > 0 else 0.0
            self._last_frames[number] = frames
            ordered = {key: value for key, value in figures.items() if key == "camera"}
            ordered["fps"] = f"{fps:.1f}"
            ordered.update(figures)
            log.info("stats: %s", " ".join(f"{key}={value}" for key, value in ordered.items()))
            published.append({"fps": round(fps, 2), **figures})
        if self._publish is not None and published:
            whole = published[-1] if len(published) == 1 else {**published[-1], "per_camera": published[:-1]}
            try:
                self._publish(whole)
            except Exception as error:  # noqa: BLE001 - the log lines above have the figures anyway
                log.warning("could not publish the stats: %s", error)

    def _run(self) -> None:
        while not self._stop.wait(self._interval()):
            try:
                self.report()
            except Exception:
                log.exception("stats report failed")
