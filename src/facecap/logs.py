"""One logging setup for every facecap process: to stdout, text or JSON lines."""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
import time
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

# Credentials written into a text: a URL's user part (rtsp://user:pass@host, up to the last "@" before the
# path, as FFmpeg splits it, so a password with an "@" is hidden whole) and GStreamer's password properties
# (rtspsrc user-pw=..., souphttpsrc proxy-pw=...).
_URL_USER = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.-]*://)[^/\s]*@")
K = TypeVar("K", bound=Hashable)
_PASSWORD_PROPERTY = re.compile(r"(\b[\w-]*(?:-pw|passwd|password))=(\"[^\"]*\"|'[^']*'|\S+)", re.IGNORECASE)


def hide_credentials(text: str) -> str:
    """`text` with any credentials it carries replaced by ***, for a log line or a printed configuration."""
    return _PASSWORD_PROPERTY.sub(r"\1=***", _URL_USER.sub(r"\1***@", text))


class Throttle:
    """Says yes at most once per `interval` seconds, so a flood of one warning stays a line now and then."""

    def __init__(self, interval: float) -> None:
        self._interval = interval
        self._last = -interval

    def due(self) -> bool:
        now = time.monotonic()
        if now - self._last < self._interval:
            return False
        self._last = now
        return True


class KeyedThrottle(Generic[K]):
    """A Throttle per key (a device, a device and a reason), so one noisy device cannot silence another's line:
    yes at a key's first event, then at most once per `interval` seconds, with how many were held back since.
    Thread-safe. Past `most` keys (ids beyond any fleet) it starts over rather than grow."""

    def __init__(self, interval: float, most: int = 10_000, clock: Callable[[], float] = time.monotonic) -> None:
        self._interval = interval
        self._most = most
        self._clock = clock
        self._lock = threading.Lock()
        self._last: dict[K, float] = {}
        self._held: dict[K, int] = {}

    def due(self, key: K) -> int | None:
        """None: stay quiet (the event is counted); else how many events of this key were held back since its
        last line."""
        now = self._clock()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self._interval:
                self._held[key] = self._held.get(key, 0) + 1
                return None
            if len(self._last) >= self._most and key not in self._last:
                self._last.clear()
                self._held.clear()
            self._last[key] = now
            return self._held.pop(key, 0)


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def setup_logging(level: str = "INFO", fmt: str = "text") -> None:
    """Send all logs to stdout, which Greengrass writes to /greengrass/v2/logs/<Component>.log."""
    handler = logging.StreamHandler(sys.stdout)
    if fmt == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        formatter = logging.Formatter("%(asctime)s.%(msecs)03dZ %(levelname)s %(name)s: %(message)s",
                                      "%Y-%m-%dT%H:%M:%S")
        formatter.converter = time.gmtime
        handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    # DEBUG is for facecap's own loggers only. Libraries stay at INFO and above: botocore's DEBUG output
    # prints every signed request, access key id and session token included, and would flood the log.
    root.setLevel(max(logging.getLevelName(level.upper()), logging.INFO))
    logging.getLogger("facecap").setLevel(level.upper())
