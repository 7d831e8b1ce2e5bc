"""Follow faces across frames and decide which crops to send (pure: no OpenCV, no clock).

Times are the frames' own timestamps in seconds, so a video file gives the same decisions however
fast it is processed.

`best` mode keeps the best-quality shot of each track and sends it when the track ends, and while the
track lasts at most once per resend interval, only if the shot improved on what was sent. A track must
be seen `min_hits` times before anything is sent, so a one-frame false positive never becomes a message.
`every` mode sends each detection, at most one per track per `every_min_interval` seconds.

With `first_shot` on (best mode), a track also sends one early shot as soon as it has `min_hits`
detections and a shot that passed the caller's quality gate (`Candidate.presentable`): the best such
shot seen so far. It is sent in addition to the best shot and does not change when or whether the best
shot is sent, so a consumer that only wants the best shot can drop the first.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Generic, Literal, TypeVar

Box = tuple[float, float, float, float]  # x, y, w, h
S = TypeVar("S")

Reason = Literal["end", "resend", "every", "first"]


def iou(a: Box, b: Box) -> float:
    ax2, ay2, bx2, by2 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
    inter_w = min(ax2, bx2) - max(a[0], b[0])
    inter_h = min(ay2, by2) - max(a[1], b[1])
    if inter_w <= 0 or inter_h <= 0:
        return 0.0
    inter = inter_w * inter_h
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


@dataclass(frozen=True)
class Candidate(Generic[S]):
    """One detected face in one frame. `shot` is whatever the caller needs to send it later."""

    bbox: Box
    score: float
    quality: float
    shot: S
    # Good enough to be sent at once as a track's first shot (sharp, whole, confident: the caller decides).
    presentable: bool = False


@dataclass(frozen=True)
class Emission(Generic[S]):
    """A decision to send one shot."""

    track_id: str
    candidate: Candidate[S]
    reason: Reason


@dataclass
class Track(Generic[S]):
    id: str
    bbox: Box
    first_seen: float
    last_seen: float
    hits: int = 1
    velocity: tuple[float, float] = (0.0, 0.0)  # pixels per second of the box's top-left corner
    best: Candidate[S] | None = None
    best_presentable: Candidate[S] | None = None  # only kept while the first shot is still due
    first_sent: bool = False
    sent_quality: float | None = None
    last_sent: float | None = None
    sent_count: int = 0

    def predicted(self, now: float) -> Box:
        dt = now - self.last_seen
        x, y, w, h = self.bbox
        return (x + self.velocity[0] * dt, y + self.velocity[1] * dt, w, h)


@dataclass(frozen=True)
class TrackerSettings:
    mode: Literal["best", "every"] = "best"
    resend_interval: float = 10.0
    min_improvement: float = 0.1
    lost_after: float = 1.0
    min_hits: int = 3
    iou_threshold: float = 0.2
    every_min_interval: float = 0.2
    max_tracks: int = 32
    # A detection whose centre is within this many face sizes of a track's predicted centre may join it
    # even without enough overlap: a fast face on its second frame, before its velocity is known.
    max_jump: float = 0.8
    # A track seen once has no velocity yet; its reach grows by this many face sizes a second between two
    # frames. Someone walking across the view moves 6 to 9 of their face widths a second, so at the 2 - 5 fps of
    # a loaded device a fixed reach starts a new track on every frame and none reaches min_hits.
    walk_speed: float = 8.0
    # best mode: also send each track's first presentable shot at once (see the module docstring).
    first_shot: bool = False
    # The quality gate the caller applies to make a candidate `presentable`.
    first_shot_min_score: float = 0.8
    first_shot_min_sharpness: float = 100.0


@dataclass
class TrackerStats:
    tracks_started: int = 0
    tracks_ended: int = 0
    tracks_refused: int = 0  # detections ignored because max_tracks were already followed


@dataclass
class Tracker(Generic[S]):
    """Greedy IoU association against each track's predicted box, then the send rules.

    `keep` is applied to a candidate's shot when the tracker stores it as a track's best, so the caller
    can pass a cheap view of the frame and copy out only the crops that are kept.
    """

    settings: TrackerSettings
    new_id: Callable[[], str]
    keep: Callable[[S], S] = field(default=lambda shot: shot)
    tracks: list[Track[S]] = field(default_factory=list)
    stats: TrackerStats = field(default_factory=TrackerStats)
    previous: float | None = field(default=None, init=False)  # time of the previous update (frame)

    def update(self, candidates: Sequence[Candidate[S]], now: float) -> list[Emission[S]]:
        """Feed one frame's detections (taken at `now`) and return what to send."""
        emissions: list[Emission[S]] = []
        frame_gap = now - self.previous if self.previous is not None else 0.0
        self.previous = now
        matches = self._associate(candidates, now, frame_gap)
        matched_candidates = set()
        for track, index in matches:
            matched_candidates.add(index)
            self._observe(track, candidates[index], now, emissions)
        for index, candidate in enumerate(candidates):
            if index in matched_candidates:
                continue
            if len(self.tracks) >= self.settings.max_tracks:
                self.stats.tracks_refused += 1
                continue
            new: Track[S] = Track(self.new_id(), candidate.bbox, now, now)
            self.tracks.append(new)
            self.stats.tracks_started += 1
            self._consider(new, candidate, now, emissions)
        for track in [t for t in self.tracks if now - t.last_seen > self.settings.lost_after]:
            self._end(track, emissions)
        return emissions

    def finish(self) -> list[Emission[S]]:
        """End every track (the source ended or we are shutting down) and return what to send."""
        emissions: list[Emission[S]] = []
        for track in list(self.tracks):
            self._end(track, emissions)
        return emissions

    # --- internals -----------------------------------------------------------------------------------

    def _associate(self, candidates: Sequence[Candidate[S]], now: float,
                   frame_gap: float) -> list[tuple[Track[S], int]]:
        pairs = []
        for track in self.tracks:
            predicted = track.predicted(now)
            jump = self.settings.max_jump
            if track.hits == 1:
                # By the time between two frames, not since the track was seen: a face seen once and then
                # not again (a flicker) must not reach a newcomer far away a second later at 30 fps.
                jump = max(jump, self.settings.walk_speed * min(now - track.last_seen, frame_gap))
            for index, candidate in enumerate(candidates):
                affinity = self._affinity(predicted, candidate.bbox, jump)
                if affinity > 0:
                    pairs.append((affinity, track, index))
        pairs.sort(key=lambda p: p[0], reverse=True)
        used_tracks: set[str] = set()
        used_candidates: set[int] = set()
        matches = []
        for _, track, index in pairs:
            if track.id in used_tracks or index in used_candidates:
                continue
            used_tracks.add(track.id)
            used_candidates.add(index)
            matches.append((track, index))
        return matches

    def _affinity(self, predicted: Box, box: Box, jump: float) -> float:
        """How well a detection fits a track: its IoU when that reaches the threshold, else a lower score
        from the centre distance within `jump` face sizes (so any overlap match wins), else 0 for no match."""
        overlap = iou(predicted, box)
        threshold = self.settings.iou_threshold
        if overlap >= threshold:
            return overlap
        size = max(predicted[2], predicted[3], box[2], box[3])
        if not 0.5 <= (box[2] * box[3]) / max(1e-9, predicted[2] * predicted[3]) <= 2.0:
            return 0.0  # a face does not double or halve in size between two frames
        dx = (predicted[0] + predicted[2] / 2) - (box[0] + box[2] / 2)
        dy = (predicted[1] + predicted[3] / 2) - (box[1] + box[3] / 2)
        reach = jump * size
        distance = (dx * dx + dy * dy) ** 0.5
        return threshold * (1 - distance / reach) if distance < reach else 0.0

    def _observe(self, track: Track[S], candidate: Candidate[S], now: float, emissions: list[Emission[S]]) -> None:
        dt = now - track.last_seen
        if dt > 0:
            # Smoothed so one jittery box does not throw the prediction off; the first step is taken whole
            # (smoothing it with the unknown 0 would predict half the motion and lose a fast face).
            vx = (candidate.bbox[0] - track.bbox[0]) / dt
            vy = (candidate.bbox[1] - track.bbox[1]) / dt
            weight = 1.0 if track.hits == 1 else 0.5
            track.velocity = ((1 - weight) * track.velocity[0] + weight * vx,
                              (1 - weight) * track.velocity[1] + weight * vy)
        track.bbox = candidate.bbox
        track.last_seen = now
        track.hits += 1
        self._consider(track, candidate, now, emissions)

    def _consider(self, track: Track[S], candidate: Candidate[S], now: float, emissions: list[Emission[S]]) -> None:
        settings = self.settings
        if settings.mode == "every":
            if track.last_sent is None or now - track.last_sent >= settings.every_min_interval:
                self._send(track, candidate, now, "every", emissions)
            return
        if track.best is None or candidate.quality > track.best.quality:
            track.best = replace(candidate, shot=self.keep(candidate.shot))
        if settings.first_shot and not track.first_sent:
            self._consider_first(track, candidate, emissions)
        if track.hits < settings.min_hits or settings.resend_interval <= 0:
            return
        since = track.last_sent if track.last_sent is not None else track.first_seen
        if now - since >= settings.resend_interval and self._improved(track):
            assert track.best is not None
            self._send(track, track.best, now, "resend", emissions)

    def _consider_first(self, track: Track[S], candidate: Candidate[S], emissions: list[Emission[S]]) -> None:
        """Send the first shot once the track is confirmed (min_hits, so a flicker never is): the best
        presentable shot so far, the current one when it is the best (no copy needed)."""
        kept = track.best_presentable
        if candidate.presentable and (kept is None or candidate.quality > kept.quality):
            if track.hits >= self.settings.min_hits:
                kept = candidate
            else:
                kept = replace(candidate, shot=self.keep(candidate.shot))
            track.best_presentable = kept
        if kept is None or track.hits < self.settings.min_hits:
            return
        track.first_sent = True
        track.best_presentable = None
        track.sent_count += 1
        emissions.append(Emission(track.id, kept, "first"))

    def _improved(self, track: Track[S]) -> bool:
        if track.best is None:
            return False
        if track.sent_quality is None:
            return True
        return track.best.quality > track.sent_quality * (1 + self.settings.min_improvement)

    def _end(self, track: Track[S], emissions: list[Emission[S]]) -> None:
        self.tracks.remove(track)
        self.stats.tracks_ended += 1
        if self.settings.mode == "best" and track.hits >= self.settings.min_hits and self._improved(track):
            assert track.best is not None
            self._send(track, track.best, track.last_seen, "end", emissions)

    @staticmethod
    def _send(track: Track[S], candidate: Candidate[S], now: float, reason: Reason,
              emissions: list[Emission[S]]) -> None:
        track.last_sent = now
        track.sent_quality = candidate.quality
        track.sent_count += 1
        emissions.append(Emission(track.id, candidate, reason))
