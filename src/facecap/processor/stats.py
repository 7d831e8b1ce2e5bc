"""Counters and store latency, logged periodically."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from ..stats import percentile


@dataclass
class ProcessorStats:
    """Counts since the start, and the store latencies of the current interval, all under one lock."""

    received: int = 0
    stored: int = 0
    quarantined: int = 0
    store_failures: int = 0
    abandoned: int = 0  # left unacknowledged at shutdown, for the broker to redeliver
    ignored: int = 0  # retained copies of faces: acknowledged, neither stored nor quarantined
    # Copies of a face in hand that came on a connection since replaced: dropped unacknowledged (their ack
    # would not count), while the face is stored through the copy in hand (inhand.py).
    superseded: int = 0
    # Copies acknowledged with the copy of their face that was stored (or quarantined): not counted again.
    copies: int = 0
    _latencies: list[float] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _window_start: float = field(default_factory=time.monotonic)
    _window_done: int = 0

    def count(self, name: str, amount: int = 1) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + amount)

    def finished(self, quarantined: bool, copy: bool = False) -> None:
        with self._lock:
            if copy:
                self.copies += 1
                return
            if quarantined:
                self.quarantined += 1
            else:
                self.stored += 1
            self._window_done += 1

    def store_latency(self, seconds: float) -> None:
        with self._lock:
            self._latencies.append(seconds)

    def summary(self, pending: int) -> str:
        """One log line about the interval since the last summary, then start a new interval."""
        with self._lock:
            latencies = sorted(self._latencies)
            self._latencies.clear()
            elapsed = max(1e-9, time.monotonic() - self._window_start)
            rate = self._window_done / elapsed
            self._window_start = time.monotonic()
            self._window_done = 0
            totals = (self.received, self.stored, self.quarantined, self.store_failures, self.copies,
                      self.superseded)
        ms = [1000 * percentile(latencies, f) for f in (0.5, 0.95, 1.0)]
        return (f"received {totals[0]}, stored {totals[1]}, quarantined {totals[2]}, store failures {totals[3]}, "
                f"copies acknowledged {totals[4]} and dropped {totals[5]}, pending {pending}; "
                f"last interval {rate:.1f} faces/s, store latency ms "
                f"p50 {ms[0]:.1f} p95 {ms[1]:.1f} max {ms[2]:.1f} over {len(latencies)} puts")
