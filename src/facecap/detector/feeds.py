"""One camera's feed: a capture thread that reads the camera into a small bounded frame queue.

The capture thread only reads and queues, so a slow detection never stalls a camera's driver or stream,
and a camera that is lost is reopened with backoff (camera.py) on its own thread while the other cameras
keep going. When detection falls behind, the queue drops its OLDEST frame (the newest shows what is in
front of the camera now) and counts the drop. A file read as fast as it decodes (maxFps 0) waits for
room instead: nothing is lost by waiting, so its frames are all processed, in order.

The queue and the feed's flags are guarded by one condition shared by every feed and the scheduler
(scheduling.py), which wakes the detection workers when a frame arrives.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from dataclasses import dataclass, field

from ..errors import ConfigError
from .camera import Camera, CameraUnavailableError, Frame
from .capture import CaptureLoop

log = logging.getLogger(__name__)

# Exit codes a feed ends with; the detector exits with the worst of its cameras'.
ENDED, GAVE_UP, BROKEN = 0, 1, 2


@dataclass
class FeedStats:
    queued: int = 0  # frames put in the queue
    dropped: int = 0  # oldest frames pushed out of the full queue


@dataclass(eq=False)
class CameraFeed:
    camera_id: str
    camera: Camera
    loop: CaptureLoop
    queue_frames: int
    condition: threading.Condition
    frames: deque[Frame] = field(default_factory=deque, init=False)
    stats: FeedStats = field(default_factory=FeedStats, init=False)
    busy: bool = field(default=False, init=False)  # a worker holds this camera's loop
    ended: bool = field(default=False, init=False)  # the capture thread is done
    finished: bool = field(default=False, init=False)  # the open tracks were sent after the end
    code: int = field(default=ENDED, init=False)
    _thread: threading.Thread | None = field(default=None, init=False)

    @property
    def waits_for_room(self) -> bool:
        """A file read as fast as it decodes waits for room; a camera (or a paced file) drops the oldest."""
        return self.camera.kind == "file" and self.camera.settings.max_fps == 0

    @property
    def state(self) -> str:
        if not self.ended:
            return "running"
        return {ENDED: "ended", GAVE_UP: "given-up", BROKEN: "failed"}[self.code]

    def tracks_overdue(self) -> bool:
        """A live camera that has sent nothing for longer than a track lives (lost, stalled, reconnecting): its
        open tracks must end now, as if their faces had left, not when the camera comes back, maybe hours later
        (a power cut meanwhile would lose them). A file's frames carry its own time, so it ends them at its
        end. Called by the scheduler while no worker holds the loop.

        Silent means a frame period late as well: a camera slower than a track lives (maxFps 0.5, a stream
        under 1 fps) would otherwise have its tracks ended between every two frames, where the tracker itself
        would have matched them to the next frame, and no track would ever reach minHits."""
        last = self.loop.last_timestamp
        if self.camera.kind == "file" or self.frames or last is None or not self.loop.tracker.tracks:
            return False
        max_fps = self.camera.settings.max_fps
        period = max(self.loop.frame_gap, 1 / max_fps if max_fps else 0.0)
        return self.camera.now() - last > self.loop.tracker.settings.lost_after + period

    def start(self, stop: threading.Event) -> None:
        self._thread = threading.Thread(target=self._capture, args=(stop,), name=f"camera-{self.camera_id}",
                                        daemon=True)
        self._thread.start()

    @property
    def capturing(self) -> bool:
        """The capture thread is still running (after a stop: stuck in a stream's open or read)."""
        return self._thread is not None and self._thread.is_alive()

    def join(self, timeout: float) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def _capture(self, stop: threading.Event) -> None:
        try:
            for frame in self.camera.frames(stop):
                self.put(frame, stop)
        except CameraUnavailableError as exc:
            log.error("camera %s: %s", self.camera_id, exc)
            self.code = GAVE_UP
        except ConfigError as exc:
            log.error("camera %s: %s", self.camera_id, exc)
            self.code = BROKEN
        except Exception:
            log.exception("camera %s failed", self.camera_id)
            self.code = BROKEN
        finally:
            with self.condition:
                self.ended = True
                self.condition.notify_all()

    def put(self, frame: Frame, stop: threading.Event) -> None:
        """Queue a frame (the capture thread's step): drop the oldest when full, or wait for room."""
        with self.condition:
            if self.waits_for_room:
                while len(self.frames) >= self.queue_frames and not stop.is_set():
                    self.condition.wait(0.5)
            elif len(self.frames) >= self.queue_frames:
                self.frames.popleft()
                self.stats.dropped += 1
            self.frames.append(frame)
            self.stats.queued += 1
            self.condition.notify_all()

    def figures(self) -> dict[str, object]:
        """This camera's part of the stats line."""
        tracker = self.loop.tracker
        return {
            "camera": self.camera_id, "state": self.state, "frames": self.loop.stats.frames,
            "faces": self.loop.stats.faces, "tracks": len(tracker.tracks), "tracks_total": tracker.stats.tracks_started,
            "sent": self.loop.stats.sent, "queue_dropped": self.stats.dropped,
            "camera_outages": self.camera.stats.outages, "skipped": self.camera.stats.skipped,
            "tracks_refused": tracker.stats.tracks_refused, "encode_failures": self.loop.stats.encode_failures,
        }
