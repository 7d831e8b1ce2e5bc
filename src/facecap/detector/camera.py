"""Frame sources: a V4L2 camera, a video file, an RTSP/HTTP stream or a GStreamer pipeline.

A live source that cannot be opened or stops delivering frames is reopened with exponential backoff,
each outage logged once when it starts and once when it ends, so a flaky camera neither stops the
detector nor floods the log. A file ends (or loops) instead.

Timestamps: a file's frames carry the file's own time (frame number / frame rate), so decisions that
depend on time are the same however fast the file is processed; live frames carry the monotonic clock.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import cv2

from ..errors import ConfigError, FacecapError
from ..logs import hide_credentials
from ..validation import file_problem
from .config import CameraSettings
from .crop import Image

log = logging.getLogger(__name__)

_FALLBACK_FILE_FPS = 25.0
# While a camera stays away, remind the log this often (the first failure and the recovery always log).
_OUTAGE_REPORT_SECONDS = 60.0


class CameraUnavailableError(FacecapError):
    """The camera stayed unavailable longer than camera.giveUpAfterSeconds."""


@dataclass(frozen=True)
class Frame:
    image: Image
    index: int  # frames delivered since start, from 0
    timestamp: float  # seconds; file time for files, monotonic clock for live sources
    captured_at: datetime  # wall clock, UTC


@dataclass
class CameraStats:
    frames: int = 0
    skipped: int = 0  # live frames dropped by the frame-rate cap
    opens: int = 0
    outages: int = 0


def source_kind(settings: CameraSettings) -> str:
    if settings.kind != "auto":
        return settings.kind
    source = settings.source
    # Any device node: /dev/videoN, or the stable names several cameras need (/dev/v4l/by-id/..., by-path).
    if source.isdigit() or (source.startswith("/dev/") and not source.startswith("/dev/shm/")):  # noqa: S108
        return "v4l2"
    # A pipeline may hold a URL (rtspsrc location=rtsp://...); a URL never holds a blank.
    if "!" in source and any(c.isspace() for c in source):
        return "gstreamer"
    if "://" in source:
        return "url"
    if "!" in source:
        return "gstreamer"
    return "file"


def has_gstreamer() -> bool:
    info = cv2.getBuildInformation()
    return re.search(r"GStreamer:\s+YES", info) is not None


def describe_source(settings: CameraSettings) -> str:
    kind = source_kind(settings)
    # Stream URLs and pipelines often carry credentials (rtsp://user:pass@host, user-pw=): never log them.
    source = hide_credentials(settings.source)
    if kind == "v4l2" and source.isdigit():
        source = f"/dev/video{source}"
    return f"{kind} {source}"


def check_source(settings: CameraSettings, key: str = "camera") -> None:
    """Refuse, before anything starts, a source that can never work: a missing file, or a GStreamer
    pipeline on an OpenCV built without GStreamer. (A missing camera device may still be plugged in.)
    `key`: how the configuration names this camera (`camera`, `cameras[2]`)."""
    kind = source_kind(settings)
    problem = file_problem(settings.source, "video file") if kind == "file" else None
    if kind == "file" and not problem and not _opens_as_video(settings.source):
        problem = f"OpenCV cannot read {settings.source} as a video"
    if problem:
        raise ConfigError("detector", [(f"{key}.source", problem)])
    if kind == "gstreamer" and not has_gstreamer():
        raise ConfigError("detector", [(f"{key}.source", f"OpenCV {cv2.__version__} was built without GStreamer, "
                                                         "so a pipeline cannot be opened (on a Jetson, use "
                                                         "the system's OpenCV: set the component's "
                                                         "systemSitePackages to true)")])


def _opens_as_video(path: str) -> bool:
    capture = cv2.VideoCapture(path)
    try:
        return bool(capture.isOpened())
    finally:
        capture.release()


Opener = Callable[[CameraSettings], Any]


def open_capture(settings: CameraSettings) -> Any:
    """A cv2.VideoCapture for the source, with the requested format applied (it may not be opened)."""
    kind = source_kind(settings)
    source = settings.source
    timeout_ms = int(settings.timeout_seconds * 1000)
    if kind == "v4l2":
        capture = cv2.VideoCapture(int(source) if source.isdigit() else source, cv2.CAP_V4L2)
        if capture.isOpened():
            if settings.fourcc:
                capture.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter.fourcc(*settings.fourcc))
            if settings.width:
                capture.set(cv2.CAP_PROP_FRAME_WIDTH, settings.width)
            if settings.height:
                capture.set(cv2.CAP_PROP_FRAME_HEIGHT, settings.height)
            if settings.fps:
                capture.set(cv2.CAP_PROP_FPS, settings.fps)
            # A short driver queue keeps frames fresh when we process slower than the camera delivers.
            capture.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        return capture
    if kind == "url":
        open_timeout = getattr(cv2, "CAP_PROP_OPEN_TIMEOUT_MSEC", None)
        read_timeout = getattr(cv2, "CAP_PROP_READ_TIMEOUT_MSEC", None)
        if open_timeout is None or read_timeout is None:
            # OpenCV before 4.6 has no stream timeouts: a hung stream then blocks until FFmpeg gives up.
            return cv2.VideoCapture(source, cv2.CAP_FFMPEG)
        return cv2.VideoCapture(source, cv2.CAP_FFMPEG, [open_timeout, timeout_ms, read_timeout, timeout_ms])
    if kind == "gstreamer":
        return cv2.VideoCapture(source, cv2.CAP_GSTREAMER)
    return cv2.VideoCapture(source)


class Camera:
    """Iterate `frames(stop)` to get frames until the stop event is set (or a file ends)."""

    def __init__(self, settings: CameraSettings, *, opener: Opener = open_capture,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.kind = source_kind(settings)
        self.description = describe_source(settings)
        self.stats = CameraStats()
        self._open = opener
        self._clock = clock
        self._period = 1.0 / settings.max_fps if settings.max_fps > 0 else 0.0
        self._next_due = 0.0
        self._last_outage_log = 0.0

    def now(self) -> float:
        """The clock a live camera stamps its frames with."""
        return self._clock()

    def frames(self, stop: threading.Event) -> Iterator[Frame]:
        if self.kind == "file":
            yield from self._file_frames(stop)
        else:
            yield from self._live_frames(stop)

    # --- files -----------------------------------------------------------------------------------------

    def _file_frames(self, stop: threading.Event) -> Iterator[Frame]:
        offset = 0.0
        while not stop.is_set():
            capture = self._open(self.settings)
            try:
                if not capture.isOpened():
                    raise ConfigError("detector", [("camera.source",
                                                    f"OpenCV cannot read {self.settings.source} as a video")])
                self.stats.opens += 1
                fps = capture.get(cv2.CAP_PROP_FPS) or _FALLBACK_FILE_FPS
                log.info("reading %s (%.3g fps%s)", self.description, fps, ", looping" if self.settings.loop else "")
                in_file = 0
                while not stop.is_set():
                    self._pace(stop)
                    ok, image = capture.read()
                    if not ok:
                        break
                    yield self._frame(image, offset + in_file / fps)
                    in_file += 1
            finally:
                capture.release()
            if not self.settings.loop or in_file == 0:
                log.info("end of %s after %d frames", self.description, self.stats.frames)
                return
            offset += in_file / fps

    def _pace(self, stop: threading.Event) -> None:
        if not self._period:
            return
        now = self._clock()
        if now < self._next_due:
            stop.wait(self._next_due - now)
            now = self._clock()
        # Never accumulate a backlog: if we fell behind, the next frame is due one period from now.
        self._next_due = max(self._next_due + self._period, now)

    # --- live sources --------------------------------------------------------------------------------------

    def _live_frames(self, stop: threading.Event) -> Iterator[Frame]:
        delay = self.settings.reconnect_min_seconds
        down_since: float | None = None
        while not stop.is_set():
            reason = self._unavailable_reason()
            capture = None if reason else self._open(self.settings)
            if capture is not None and not capture.isOpened():
                capture.release()
                capture, reason = None, "OpenCV could not open it"
            if capture is None:
                down_since = self._outage(down_since, reason or "", delay)
                stop.wait(delay)
                delay = min(delay * 2, self.settings.reconnect_max_seconds)
                continue
            self.stats.opens += 1
            size = f"{int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))}x{int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))}"
            if down_since is None:
                log.info("camera %s opened (%s, %.3g fps)", self.description, size, capture.get(cv2.CAP_PROP_FPS))
            before = self.stats.frames
            try:
                for frame in self._read_live(capture, stop):
                    if down_since is not None:  # back only once a frame comes, not when it merely opens
                        log.info("camera %s is back after %.1f s (%s)", self.description,
                                 self._clock() - down_since, size)
                        down_since = None
                    yield frame
            finally:
                capture.release()
            if stop.is_set():
                return
            if self.stats.frames > before:
                delay = self.settings.reconnect_min_seconds
                down_since = self._outage(None, "no frame received (disconnected or stream ended)", delay)
            else:
                # It opens but sends nothing (a USB camera on a saturated bus): the same outage, backing off.
                down_since = self._outage(down_since, "it opens but delivers no frame", delay)
            stop.wait(delay)
            if self.stats.frames == before:
                delay = min(delay * 2, self.settings.reconnect_max_seconds)

    def _read_live(self, capture: Any, stop: threading.Event) -> Iterator[Frame]:
        while not stop.is_set():
            # grab() without retrieve() skips a frame without decoding it: cheap frame-rate capping.
            if not capture.grab():
                return
            now = self._clock()
            if self._period and now < self._next_due:
                self.stats.skipped += 1
                continue
            ok, image = capture.retrieve()
            if not ok:
                return
            self._next_due = max(self._next_due + self._period, now)
            yield self._frame(image, now)

    def _unavailable_reason(self) -> str | None:
        if self.kind == "v4l2":
            source = self.settings.source
            device = Path(f"/dev/video{source}" if source.isdigit() else source)
            if not device.exists():
                return f"{device} does not exist (camera unplugged or not yet enumerated)"
        return None

    def _outage(self, down_since: float | None, reason: str, delay: float) -> float:
        now = self._clock()
        if down_since is None:
            self.stats.outages += 1
            self._last_outage_log = now
            log.error("camera %s unavailable: %s; retrying with backoff (first in %.1f s)",
                      self.description, reason, delay)
            return now
        limit = self.settings.give_up_after_seconds
        if limit and now - down_since >= limit:
            raise CameraUnavailableError(
                f"camera {self.description} unavailable for {now - down_since:.0f} s "
                f"(camera.giveUpAfterSeconds={limit:g}): {reason}")
        if now - self._last_outage_log >= _OUTAGE_REPORT_SECONDS:
            self._last_outage_log = now
            log.warning("camera %s still unavailable after %.0f s: %s; next attempt in %.1f s",
                        self.description, now - down_since, reason, delay)
        return down_since

    def _frame(self, image: Image, timestamp: float) -> Frame:
        frame = Frame(image, self.stats.frames, timestamp, datetime.now(timezone.utc))
        self.stats.frames += 1
        return frame
