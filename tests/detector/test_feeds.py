"""The frame queue of a camera (drop the oldest when full, or wait for room for an unpaced file) and the
round-robin scheduler that hands frames to the detection workers: pure logic, no camera opened."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import numpy as np
import pytest

from facecap.detector.camera import Camera, Frame
from facecap.detector.capture import CaptureLoop
from facecap.detector.config import CameraSettings
from facecap.detector.feeds import CameraFeed
from facecap.detector.scheduling import END, EXPIRE, FrameScheduler
from facecap.detector.tracking import TrackerSettings

pytestmark = pytest.mark.unit

IMAGE = np.zeros((4, 4, 3), np.uint8)


def frame(index: int) -> Frame:
    return Frame(IMAGE, index, index / 15, datetime.now(timezone.utc))


@dataclass
class IdleLoop:
    """What the scheduler reads of a capture loop (it never runs one): when its last frame was, and its
    tracks."""

    last_timestamp: float | None = None
    frame_gap: float = 0.0
    tracker: Any = field(default_factory=lambda: SimpleNamespace(tracks=[], settings=TrackerSettings()))


def feed(camera_id: str, condition: threading.Condition, source: str = "rtsp://cam/1", max_fps: float = 15,
         queue_frames: int = 4, *, loop: IdleLoop | None = None, clock: Callable[[], float] = time.monotonic
         ) -> CameraFeed:
    return CameraFeed(camera_id, Camera(CameraSettings(source=source, max_fps=max_fps), clock=clock),
                      cast(CaptureLoop, loop or IdleLoop()), queue_frames, condition)


def test_a_full_queue_drops_its_oldest_frames_and_counts_them() -> None:
    camera = feed("door", threading.Condition())
    stop = threading.Event()
    for index in range(7):
        camera.put(frame(index), stop)
    assert [f.index for f in camera.frames] == [3, 4, 5, 6]
    assert (camera.stats.dropped, camera.stats.queued) == (3, 7)


def test_an_unpaced_file_waits_for_room_instead_of_dropping(tmp_path: Path) -> None:
    condition = threading.Condition()
    camera = feed("file", condition, source=str(tmp_path / "video.avi"), max_fps=0, queue_frames=2)
    stop = threading.Event()
    scheduler = FrameScheduler([camera], condition)

    def read() -> None:
        for index in range(5):
            camera.put(frame(index), stop)

    reader = threading.Thread(target=read)
    reader.start()
    taken: list[int] = []
    while len(taken) < 5:
        job = scheduler.next_job(stop)
        assert job is not None and isinstance(job[1], Frame)
        taken.append(job[1].index)
        scheduler.done(camera, finished=False)
    reader.join(5)
    assert taken == [0, 1, 2, 3, 4] and camera.stats.dropped == 0


def test_round_robin_over_the_cameras_with_frames_skipping_a_held_one() -> None:
    condition = threading.Condition()
    busy, quiet, idle = feed("busy", condition), feed("quiet", condition), feed("idle", condition)
    stop = threading.Event()
    for index in range(4):
        busy.put(frame(index), stop)
    quiet.put(frame(0), stop)
    scheduler = FrameScheduler([busy, quiet, idle], condition)

    first = scheduler.next_job(stop)
    assert first is not None and first[0] is busy
    # While a worker holds `busy`, another worker gets the next camera with a frame, never `busy` again.
    second = scheduler.next_job(stop)
    assert second is not None and second[0] is quiet
    scheduler.done(quiet, finished=False)
    scheduler.done(busy, finished=False)
    order = []
    for _ in range(3):
        job = scheduler.next_job(stop)
        assert job is not None and isinstance(job[1], Frame)
        order.append((job[0].camera_id, job[1].index))
        scheduler.done(job[0], finished=False)
    assert order == [("busy", 1), ("busy", 2), ("busy", 3)]  # the only camera left with frames


def test_an_ended_camera_gets_one_last_job_then_the_scheduler_is_done() -> None:
    condition = threading.Condition()
    camera = feed("door", condition)
    stop = threading.Event()
    camera.put(frame(0), stop)
    camera.ended = True
    scheduler = FrameScheduler([camera], condition)
    job = scheduler.next_job(stop)
    assert job is not None and isinstance(job[1], Frame)  # its queued frame first
    scheduler.done(camera, finished=False)
    last = scheduler.next_job(stop)
    assert last is not None and last[1] == END  # then the end: send the open tracks
    scheduler.done(camera, finished=True)
    assert scheduler.next_job(stop) is None


def test_a_silent_live_camera_with_open_tracks_gets_a_job_that_ends_them(tmp_path: Path) -> None:
    # The tracker lives by its frames' time; a camera that sends none would keep its tracks (and the best
    # shots they hold) until it came back.
    now = [100.0]
    loop = IdleLoop(last_timestamp=100.0)
    loop.tracker.tracks.append(object())
    condition = threading.Condition()
    camera = feed("door", condition, loop=loop, clock=lambda: now[0])
    assert not camera.tracks_overdue()  # not yet lostAfterSeconds (1 s) without a frame
    now[0] = 101.5
    assert camera.tracks_overdue()
    job = FrameScheduler([camera], condition).next_job(threading.Event())
    assert job is not None and job[1] == EXPIRE
    # Nothing to end, or frames still waiting: no such job.
    loop.tracker.tracks.clear()
    assert not camera.tracks_overdue()
    loop.tracker.tracks.append(object())
    camera.put(frame(7), threading.Event())
    assert not camera.tracks_overdue()
    # A file is paced by its own time and ends its tracks at its end.
    video = feed("file", condition, source=str(tmp_path / "video.avi"), loop=loop, clock=lambda: now[0])
    assert not video.tracks_overdue()


def test_a_camera_slower_than_a_track_lives_is_not_silent_until_a_frame_period_is_over() -> None:
    now = [100.0]
    loop = IdleLoop(last_timestamp=100.0)
    loop.tracker.tracks.append(object())
    condition = threading.Condition()
    capped = feed("door", condition, max_fps=0.5, loop=loop, clock=lambda: now[0])  # a frame every 2 s
    now[0] = 102.5
    assert not capped.tracks_overdue()  # its next frame is due about now
    now[0] = 103.1
    assert capped.tracks_overdue()  # lostAfterSeconds (1 s) past the frame that should have come
    # Uncapped but slow (a stream under 1 fps): the gap between its last two frames says so.
    slow = feed("gate", condition, max_fps=0, loop=loop, clock=lambda: now[0])
    loop.frame_gap = 1.5
    now[0] = 102.4
    assert not slow.tracks_overdue()
    now[0] = 102.6
    assert slow.tracks_overdue()
