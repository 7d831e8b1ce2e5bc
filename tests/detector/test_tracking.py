"""The tracker's association and send rules, driven frame by frame with synthetic boxes."""

from __future__ import annotations

import itertools
from collections.abc import Iterable

import pytest

from facecap.detector.tracking import Box, Candidate, Emission, Tracker, TrackerSettings, iou

pytestmark = pytest.mark.unit

FPS = 10.0


def make_tracker(**overrides: object) -> Tracker[str]:
    counter = itertools.count(1)
    settings = TrackerSettings(**{"resend_interval": 10.0, "lost_after": 1.0, "min_hits": 3, **overrides})  # type: ignore[arg-type]
    return Tracker(settings, new_id=lambda: f"t{next(counter)}")


def cand(box: Box, quality: float = 0.5, shot: str = "", score: float = 0.9) -> Candidate[str]:
    return Candidate(box, score, quality, shot or f"q{quality}")


def walk(tracker: Tracker[str], frames: Iterable[list[Candidate[str]]],
         start: float = 0.0) -> list[tuple[float, Emission[str]]]:
    sent = []
    t = start
    for candidates in frames:
        sent += [(t, e) for e in tracker.update(candidates, t)]
        t += 1 / FPS
    return sent


def moving(n: int, x0: float = 0, dx: float = 15, y: float = 100,
           qualities: list[float] | None = None) -> list[list[Candidate[str]]]:
    return [[cand((x0 + i * dx, y, 100, 120), (qualities or [0.5] * n)[i])] for i in range(n)]


def test_iou_basics() -> None:
    assert iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert iou((0, 0, 10, 10), (10, 0, 10, 10)) == 0.0
    assert iou((0, 0, 10, 10), (5, 0, 10, 10)) == pytest.approx(50 / 150)


def test_best_mode_sends_the_best_shot_once_when_the_track_ends() -> None:
    tracker = make_tracker()
    qualities = [0.2, 0.4, 0.9, 0.6, 0.3]
    sent = walk(tracker, moving(5, qualities=qualities) + [[]] * 12)
    assert [(e.reason, e.candidate.shot, e.track_id) for _, e in sent] == [("end", "q0.9", "t1")]
    # Decided once the face was gone for longer than lost_after, not before.
    assert sent[0][0] > 0.4 + 1.0
    assert tracker.tracks == []


def test_a_short_flicker_is_never_sent() -> None:
    tracker = make_tracker(min_hits=3)
    sent = walk(tracker, [[cand((10, 10, 80, 80))], [cand((12, 10, 80, 80))]] + [[]] * 15)
    assert sent == []
    assert tracker.stats.tracks_ended == 1


def test_a_face_missed_for_a_few_frames_keeps_its_track() -> None:
    tracker = make_tracker(lost_after=1.0)
    frames = moving(4) + [[]] * 5 + [[cand((4 * 15 + 5 * 15, 100, 100, 120), 0.7)]] + [[]] * 15
    sent = walk(tracker, frames)
    assert [e.candidate.shot for _, e in sent] == ["q0.7"]
    assert tracker.stats.tracks_started == 1


def test_the_prediction_follows_a_fast_face() -> None:
    # 60 px a frame on a 100 px face: consecutive boxes overlap too little (IoU 0.25) once the velocity
    # is known only if the tracker predicts; a gap of two frames would lose it without prediction.
    tracker = make_tracker(iou_threshold=0.3)
    frames = moving(4, dx=60) + [[]] + [[cand((5 * 60, 100, 100, 120))]] + [[]] * 15
    sent = walk(tracker, frames)
    assert tracker.stats.tracks_started == 1
    assert len(sent) == 1


def test_two_faces_get_two_tracks_and_two_messages() -> None:
    tracker = make_tracker()
    frames = [[cand((i * 10, 50, 90, 100), 0.5, "left"), cand((500 - i * 10, 300, 90, 100), 0.6, "right")]
              for i in range(8)]
    sent = walk(tracker, frames + [[]] * 12)
    assert sorted(e.candidate.shot for _, e in sent) == ["left", "right"]
    assert len({e.track_id for _, e in sent}) == 2


def test_resend_only_after_the_interval_and_only_if_better() -> None:
    tracker = make_tracker(resend_interval=2.0, min_improvement=0.1)
    # 6 s of a face: quality 0.5 for 3 s, then 0.52 (not 10 % better), then 0.8.
    qualities = [0.5] * 30 + [0.52] * 15 + [0.8] * 15
    sent = walk(tracker, moving(60, dx=1, qualities=qualities) + [[]] * 12)
    reasons = [(round(t, 1), e.reason, e.candidate.quality) for t, e in sent]
    # First at 2 s (the interval after the track started), then not at 4 s (0.52 is no real gain),
    # then as soon as 0.8 appears after 4.5 s; nothing better after that, so nothing at the end.
    assert reasons == [(2.0, "resend", 0.5), (4.5, "resend", 0.8)]


def test_resend_interval_zero_sends_only_at_the_end() -> None:
    tracker = make_tracker(resend_interval=0)
    sent = walk(tracker, moving(100, dx=1, qualities=[i / 100 for i in range(100)]) + [[]] * 12)
    assert [(e.reason, e.candidate.quality) for _, e in sent] == [("end", 0.99)]


def test_the_end_resends_only_an_improvement() -> None:
    tracker = make_tracker(resend_interval=1.0)
    sent = walk(tracker, moving(15, dx=1, qualities=[0.5] * 12 + [0.9] * 3) + [[]] * 12)
    assert [(e.reason, e.candidate.quality) for _, e in sent] == [("resend", 0.5), ("end", 0.9)]


def test_every_mode_sends_each_detection_without_waiting() -> None:
    tracker = make_tracker(mode="every", every_min_interval=0)
    sent = walk(tracker, moving(5) + [[]] * 12)
    assert [e.reason for _, e in sent] == ["every"] * 5
    assert [round(t, 1) for t, _ in sent] == [0.0, 0.1, 0.2, 0.3, 0.4]


def test_every_mode_is_rate_limited_per_face() -> None:
    tracker = make_tracker(mode="every", every_min_interval=0.25)
    frames = [[cand((i, 10, 80, 80), shot="a"), cand((400 - i, 300, 80, 80), shot="b")] for i in range(10)]
    sent = walk(tracker, frames)
    per_face = {shot: [round(t, 1) for t, e in sent if e.candidate.shot == shot] for shot in ("a", "b")}
    assert per_face == {"a": [0.0, 0.3, 0.6, 0.9], "b": [0.0, 0.3, 0.6, 0.9]}


def test_finish_ends_every_track() -> None:
    tracker = make_tracker()
    walk(tracker, moving(5, qualities=[0.1, 0.2, 0.3, 0.2, 0.1]))
    sent = tracker.finish()
    assert [(e.reason, e.candidate.quality) for e in sent] == [("end", 0.3)]
    assert tracker.tracks == []


def test_max_tracks_bounds_the_state() -> None:
    tracker = make_tracker(max_tracks=2)
    tracker.update([cand((i * 120, 0, 100, 100)) for i in range(5)], 0.0)
    assert len(tracker.tracks) == 2
    assert tracker.stats.tracks_refused == 3


def test_keep_is_applied_only_to_shots_that_become_the_best() -> None:
    kept: list[str] = []

    def keep(shot: str) -> str:
        kept.append(shot)
        return shot.upper()

    tracker: Tracker[str] = Tracker(TrackerSettings(), new_id=lambda: "t", keep=keep)
    for t, quality in enumerate([0.3, 0.2, 0.5, 0.4]):
        tracker.update([cand((0, 0, 100, 100), quality, shot=f"s{t}")], t * 0.1)
    assert kept == ["s0", "s2"]
    assert [e.candidate.shot for e in tracker.finish()] == ["S2"]


def test_a_neighbour_appearing_beside_a_face_gets_its_own_track() -> None:
    tracker = make_tracker()
    walk(tracker, [[cand((100, 100, 100, 100))]] * 3)
    # A second face, touching the first (centres one face width apart): not a jump of the first.
    tracker.update([cand((100, 100, 100, 100)), cand((200, 100, 100, 100))], 0.3)
    assert len(tracker.tracks) == 2
    assert tracker.tracks[0].hits == 4


def presentable_frames(flags: list[bool], qualities: list[float]) -> list[list[Candidate[str]]]:
    return [[Candidate((i * 15.0, 100, 100, 120), 0.9, q, f"f{i}", ok)]
            for i, (ok, q) in enumerate(zip(flags, qualities, strict=True))]


def test_first_shot_is_sent_once_the_track_is_confirmed_and_the_best_still_at_the_end() -> None:
    tracker = make_tracker(first_shot=True)
    frames = presentable_frames([True, False, True, True, True, True], [0.3, 0.8, 0.4, 0.5, 0.9, 0.2])
    sent = walk(tracker, frames + [[]] * 12)
    # At the third detection (min_hits): the best presentable shot so far (f2, not the blurred f1);
    # at the end: the best shot of all, as without firstShot.
    assert sent[0][0] == pytest.approx(0.2)
    assert [(e.reason, e.candidate.shot, e.track_id) for _, e in sent] == [("first", "f2", "t1"), ("end", "f4", "t1")]


def test_first_shot_waits_for_a_presentable_shot_and_never_for_a_flicker() -> None:
    tracker = make_tracker(first_shot=True)
    sent = walk(tracker, presentable_frames([False] * 4 + [True, False], [0.5] * 6) + [[]] * 12)
    assert [(e.reason, e.candidate.shot) for _, e in sent] == [("first", "f4"), ("end", "f0")]
    flicker = make_tracker(first_shot=True)
    assert walk(flicker, presentable_frames([True, True], [0.9, 0.9]) + [[]] * 12) == []
    # A track that never has a presentable shot still sends its best at the end, and nothing else.
    dull = make_tracker(first_shot=True)
    assert [e.reason for _, e in walk(dull, presentable_frames([False] * 5, [0.5] * 5) + [[]] * 12)] == ["end"]


def test_first_shot_off_by_default_and_ignored_in_every_mode() -> None:
    frames = presentable_frames([True] * 5, [0.5] * 5) + [[]] * 12
    assert [e.reason for _, e in walk(make_tracker(), frames)] == ["end"]
    every = walk(make_tracker(first_shot=True, mode="every", every_min_interval=0), frames)
    assert {e.reason for _, e in every} == {"every"}


@pytest.mark.parametrize("fps", [2.0, 3.0, 5.0])
def test_someone_walking_past_a_slow_camera_is_one_track_and_sent(fps: float) -> None:
    """A walker moves 6 to 9 face widths a second; at the 2 - 5 fps of a loaded device that is more than a
    face width a frame, beyond a fixed reach, so every frame used to start a track and none was sent."""
    tracker = make_tracker()
    step = 9 * 100 / fps  # face widths of 100 px, 9 a second
    frames = [[cand((i * step, 100, 100, 120), 0.5 + 0.01 * i, shot=f"frame{i}")] for i in range(8)]
    sent, t = [], 0.0
    for candidates in [*frames, *[[]] * int(3 * fps)]:
        sent += tracker.update(candidates, t)
        t += 1 / fps
    assert tracker.stats.tracks_started == 1
    assert [(e.reason, e.candidate.shot) for e in sent] == [("end", "frame7")]


@pytest.mark.parametrize("second", [
    # The reach grows with the time between frames: at 10 fps it stays near one face size, so a second
    # person three faces away starts a track of their own.
    (300, 100, 100, 120),
    # A child's face beside an adult's track, within reach: a face does not double or halve between frames.
    (10, 110, 30, 36),
], ids=["three-faces-away", "a-third-the-size"])
def test_a_face_a_frame_later_that_cannot_be_the_same_person_starts_its_own_track(second: Box) -> None:
    tracker = make_tracker()
    tracker.update([cand((0, 100, 100, 120))], 0.0)
    tracker.update([cand(second)], 0.1)
    assert tracker.stats.tracks_started == 2


def test_two_faces_side_by_side_keep_their_own_tracks() -> None:
    """Both faces overlap both tracks; the best overlap must win each (greedy from the best down), or the
    tracks swap every frame, both send one person and the other is never sent."""
    tracker = make_tracker()
    for frame in range(5):
        tracker.update([cand((100, 100, 100, 100), 0.5 + 0.1 * frame, shot=f"alice{frame}"),
                        cand((140, 100, 100, 100), 0.4, shot=f"bob{frame}")], frame / FPS)
    sent = {e.candidate.shot.rstrip("0123456789") for e in tracker.finish()}
    assert sent == {"alice", "bob"} and tracker.stats.tracks_started == 2


def test_a_flicker_does_not_reach_a_newcomer_far_away_at_a_normal_frame_rate() -> None:
    """The reach of a track seen once grows with the time between frames, not with the time since it was seen:
    at 30 fps a one-frame false positive (or a face that turned away) must not take over someone who appears
    four face widths away half a second later, and send its own shot instead of theirs."""
    tracker = make_tracker()
    fps = 30.0
    sent = tracker.update([cand((100, 100, 100, 120), 0.9, shot="flicker")], 0.0)
    for frame in range(1, 80):  # the newcomer is in view from 0.6 s to 1.6 s
        visible = [cand((500, 100, 100, 120), 0.7, shot="newcomer")] if 18 <= frame < 48 else []
        sent += tracker.update(visible, frame / fps)
    sent += tracker.finish()
    assert [e.candidate.shot for e in sent] == ["newcomer"]
