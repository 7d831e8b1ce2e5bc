"""One logging setup for every facecap process: to stdout, text or JSON lines."""

from __future__ import annotations

import json
import logging
import re
import sys
import time

# Credentials written into a text: a URL's user part (rtsp://user:pass@host, up to the last "@" before the
# path, as FFmpeg splits it, so a password with an "@" is hidden whole) and GStreamer's password properties
# (rtspsrc user-pw=..., souphttpsrc proxy-pw=...).
_URL_USER = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.-]*://)[^/\s]*@")
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
