"""The one way a long-running command stops: SIGTERM (Greengrass, Docker) and SIGINT (Ctrl-C) set an event
that the runner's `run(stop)` watches, so the runner finishes in order instead of dying mid-message."""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType


def stop_on_signals(log: logging.Logger | None = None, doing: str = "") -> threading.Event:
    """An event set by SIGTERM or SIGINT; with `log`, each signal is logged as "<SIGNAL> received: <doing>"."""
    stop = threading.Event()

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        if log is not None:
            log.info("%s received: %s", signal.Signals(signum).name, doing)
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    return stop
