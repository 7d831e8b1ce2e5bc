"""Who detects what: a pool of detection workers shared by every camera, fed round-robin.

Each worker thread owns one detector (cv2.FaceDetectorYN keeps per-call state and must not be shared
between threads). A worker asks the scheduler for a job: the oldest queued frame of the next camera, in
round-robin order, that has a frame and that no other worker holds. A camera is held by one worker at a
time, so its frames go through its tracker one by one and in order, and its tracks never meet another
camera's. Round-robin means a camera whose frames take long (many faces) takes its turn like the others
and cannot starve them: each camera with frames waiting gets one frame per round.

When a camera's feed has ended (a file at its end, a camera given up) and its queue is empty, one last
job sends what its open tracks still hold. When `stop` is set, queued frames are left and every camera
gets that last job. The pool ends when every camera has had it. A live camera that has gone silent with
tracks open gets a job that ends the tracks it has not seen for lostAfterSeconds (feeds.py).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Literal

from .camera import Frame
from .detection import FaceDetector
from .feeds import CameraFeed

log = logging.getLogger(__name__)

# What a worker does for a camera: a frame, or END (send its open tracks: the camera is finished), or EXPIRE
# (end the tracks a silent live camera has not seen for lostAfterSeconds).
Work = Frame | Literal["end", "expire"]
END: Literal["end"] = "end"
EXPIRE: Literal["expire"] = "expire"
Job = tuple[CameraFeed, Work]


class FrameScheduler:
    def __init__(self, feeds: Sequence[CameraFeed], condition: threading.Condition) -> None:
        self.feeds = list(feeds)
        self._condition = condition
        self._next = 0

    def next_job(self, stop: threading.Event) -> Job | None:
        """Wait for a job; None once every camera is finished."""
        with self._condition:
            while True:
                job = self._pick(stop.is_set())
                if job is not None:
                    return job
                if all(feed.finished for feed in self.feeds):
                    return None
                # A timeout, so a stop set without a notification is still seen.
                self._condition.wait(0.2)

    def _pick(self, stopping: bool) -> Job | None:
        count = len(self.feeds)
        for step in range(count):
            index = (self._next + step) % count
            feed = self.feeds[index]
            if feed.busy or feed.finished:
                continue
            work: Work
            if feed.frames and not stopping:
                work = feed.frames.popleft()
            elif feed.ended or stopping:
                work = END
            elif feed.tracks_overdue():
                work = EXPIRE
            else:
                continue
            self._next = index + 1
            feed.busy = True
            self._condition.notify_all()  # room in the queue for a capture thread that waits for it
            return feed, work
        return None

    def done(self, feed: CameraFeed, finished: bool) -> None:
        with self._condition:
            feed.busy = False
            feed.finished = feed.finished or finished
            self._condition.notify_all()


class DetectionPool:
    """One thread per detector, taking jobs from the scheduler until every camera is finished."""

    def __init__(self, scheduler: FrameScheduler, detectors: list[FaceDetector]) -> None:
        self.scheduler = scheduler
        # The caller's list itself, not a copy: a live configuration change swaps its items (runner.py), and
        # each worker reads its own slot at every job.
        self.detectors = detectors

    def run(self, stop: threading.Event) -> None:
        threads = [threading.Thread(target=self._work, args=(number, stop), name=f"detect-{number}", daemon=True)
                   for number in range(len(self.detectors))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    def _work(self, number: int, stop: threading.Event) -> None:
        while (job := self.scheduler.next_job(stop)) is not None:
            feed, work = job
            try:
                if isinstance(work, Frame):
                    feed.loop.process(work, self.detectors[number])
                elif work == END:
                    feed.loop.finish()
                else:
                    feed.loop.expire(feed.camera.now())
            except Exception:
                # One bad frame must not end a worker that every camera needs.
                log.exception("camera %s: processing %s failed", feed.camera_id,
                              work if isinstance(work, str) else f"frame {work.index}")
            finally:
                self.scheduler.done(feed, finished=work == END)
