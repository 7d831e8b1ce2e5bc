"""The demo's runner: start the local pipeline on a source, wait until the detector is done, take stock of
what was published and stored, print the summary and write the gallery (`facecap demo`)."""

from __future__ import annotations

import contextlib
import logging
import re
import signal
import statistics
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...errors import UsageError
from ...outbox.inspect import read_pending
from ...polling import wait_until
from ...stats import percentile
from .inventory import StoredObject, read_body, read_inventory
from .pipeline import Component, LocalPipeline
from .tap import Tap

log = logging.getLogger(__name__)


def error_lines(log_text: str) -> list[str]:
    """A component's ERROR lines (camera outages, failed publishes), without the time stamp."""
    return [line.split(" ERROR ", 1)[1] for line in log_text.splitlines() if " ERROR " in line]


def _interrupt(_signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def _handling(handler: Any, *numbers: signal.Signals) -> Iterator[None]:
    """`handler` for these signals while the block runs (only the main thread may set one)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {number: signal.signal(number, handler) for number in numbers}
    try:
        yield
    finally:
        for number, earlier in previous.items():
            signal.signal(number, earlier)


def detector_stats(log_text: str) -> dict[str, str]:
    """The detector's last `stats: key=value ...` line."""
    lines = [line for line in log_text.splitlines() if "stats: " in line]
    if not lines:
        return {}
    return dict(re.findall(r"(\w+)=(\S+)", lines[-1].split("stats: ", 1)[1]))


@dataclass
class Outcome:
    """What a run ended with: how many faces were published, whether all of them were stored in time,
    and the ids published in this run."""

    published: int
    all_stored: bool
    this_run: set[str]


class DemoRunner:
    """One demo run on a LocalPipeline, writing into `out`; `duration` bounds a live source (0: until the
    source ends or Ctrl-C)."""

    def __init__(self, pipeline: LocalPipeline, out: Path, duration: float = 0.0) -> None:
        self.pipeline = pipeline
        self.out = out
        self.duration = duration

    def run(self, source: str | Sequence[str]) -> int:
        """Run on `source`, or on several sources as the cameras cam0, cam1, ... of one detector."""
        # SIGTERM and SIGHUP (a `timeout`, a closed terminal) stop the demo as Ctrl-C does: their default
        # action would end it without stopping its parts.
        with _handling(_interrupt, signal.SIGTERM, signal.SIGHUP):
            try:
                return self._run(source)
            finally:
                # The parts run in sessions of their own, so only this stops them: a second Ctrl-C (or a
                # SIGTERM) meanwhile must not cut it short. Ignored, not blocked: awscrt's threads would take
                # a blocked signal instead.
                with _handling(signal.SIG_IGN, signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                    self.pipeline.stop_all()

    def _run(self, source: str | Sequence[str]) -> int:
        started = time.monotonic()
        tap, detector = self._start(source)
        self._watch(tap, detector)
        outcome = self._finish(tap, detector)
        faces, summary = self._take_stock(tap, detector, outcome, started)
        gallery = write_gallery_for(self.out, self.pipeline.store_url, faces, self.pipeline.s3_client(), summary)
        self._print_summary(summary, gallery)
        missing = outcome.this_run - {face.face_id for face in faces}
        if not outcome.all_stored or missing or outcome.published == 0:
            print(f"demo: FAILED: {len(missing)} published face(s) not stored, {outcome.published} published",
                  flush=True)
            for line in error_lines(detector.log_text())[-3:]:
                print(f"demo: the detector logged: {line}", flush=True)
            return 1
        return 0

    def _start(self, source: str | Sequence[str]) -> tuple[Tap, Component]:
        """Cloud side first, so the bridge and the processor find their broker; the tap before the detector,
        so it sees every face."""
        pipeline = self.pipeline
        pipeline.start_cloud()
        print(f"demo: cloud broker with TLS on 127.0.0.1:{pipeline.cloud.port if pipeline.cloud else '?'}, "
              f"store {pipeline.store_url}", flush=True)
        pipeline.start_processor()
        pipeline.start_edge_broker()
        pipeline.start_logger()
        tap = Tap(pipeline.edge_settings("monitor"), ignore=_pending_faces(pipeline.detector_outbox))
        tap.start()
        detector = pipeline.start_detector(source)
        print(f"demo: edge broker on {pipeline.edge_dir}/mosquitto.sock bridged to the cloud; detector reading "
              f"{source if isinstance(source, str) else ', '.join(source)}", flush=True)
        return tap, detector

    def _watch(self, tap: Tap, detector: Component) -> None:
        """Print progress until the detector ends, the duration is over or the user presses Ctrl-C."""
        deadline = time.monotonic() + self.duration if self.duration else None
        reported = 0
        try:
            while detector.running and (deadline is None or time.monotonic() < deadline):
                time.sleep(2)
                text = detector.log_text()
                _progress(self.pipeline, tap, text)
                # A camera it cannot open is retried with backoff, not fatal: say why nothing comes.
                errors = error_lines(text)
                for line in errors[max(reported, len(errors) - 3):]:
                    print(f"demo: the detector logged: {line}", flush=True)
                reported = len(errors)
        except KeyboardInterrupt:
            print("demo: stopping the detector", flush=True)

    def _finish(self, tap: Tap, detector: Component) -> Outcome:
        """Stop the detector and wait (bounded) until every face it published is stored."""
        ended_by_itself = not detector.running
        code = detector.stop()
        if ended_by_itself and code:
            raise detector_failure(detector, code)
        published = tap.count()
        all_stored = wait_until(lambda: _stored_count(self.pipeline, tap) >= published, timeout=60, interval=0.5)
        time.sleep(1)
        tap.client.stop()
        return Outcome(published=published, all_stored=all_stored, this_run=tap.ids())

    def _take_stock(self, tap: Tap, detector: Component, outcome: Outcome,
                    started: float) -> tuple[list[StoredObject], dict[str, str]]:
        """This run's stored faces and the summary's figures."""
        inventory = read_inventory(self.pipeline.store_url, s3_client=self.pipeline.s3_client())
        faces = _of_this_run(inventory.faces, outcome.this_run)
        stats = detector_stats(detector.log_text())
        latencies = _latencies(faces, tap)
        unknown = "n/a (S3 dates objects in whole seconds)" if self.pipeline.s3 is not None else "n/a"
        summary = {
            "frames": stats.get("frames", "?"),
            "faces detected": stats.get("faces", "?"),
            "tracks": stats.get("tracks_total", "?"),
            "messages published": str(outcome.published),
            "objects stored": str(len(faces)),
            "stored per camera": _per_camera(faces),
            "quarantined": str(len(inventory.quarantined)),
            "dropped by the detector": stats.get("dropped", "?"),
            # Capture to stored. In best-shot mode a face is sent when its track ends, seconds after the
            # best frame was captured, so this is mostly the time the person stayed in view.
            "capture-to-store p50": f"{statistics.median(latencies):.0f} ms" if latencies else unknown,
            "capture-to-store p99": f"{percentile(latencies, 0.99):.0f} ms" if latencies else unknown,
            **_first_shot_figures(faces, tap),
            "run time": f"{time.monotonic() - started:.1f} s",
        }
        return faces, summary

    def _print_summary(self, summary: dict[str, str], gallery: Path) -> None:
        print("\ndemo: summary")
        for key, value in summary.items():
            print(f"  {key:<32} {value}")
        print(f"  {'gallery':<32} {gallery}")
        print(f"  {'logs':<32} {self.pipeline.logs}")


def _pending_faces(outbox: Path) -> frozenset[str]:
    """Faces an earlier run left waiting for their receipt: the detector publishes them again, but they are
    not this run's."""
    if not (outbox / "outbox.db").exists():
        return frozenset()
    return frozenset(entry.face_id for entry in read_pending(outbox))


def _latencies(faces: list[StoredObject], tap: Tap) -> list[float]:
    """Milliseconds from each face's capture (its frame) to its object in the store (none where the store
    does not say to the millisecond when it stored an object)."""
    return [(face.stored_at - captured.timestamp()) * 1000 for face in faces
            if face.stored_at is not None and (captured := tap.face_ids.get(face.face_id)) is not None]


def _per_camera(faces: list[StoredObject]) -> str:
    counts = Counter(face.metadata.get("camera-id", "?") for face in faces)
    return ", ".join(f"{camera} {count}" for camera, count in sorted(counts.items())) or "none"


def _first_shot_figures(faces: list[StoredObject], tap: Tap) -> dict[str, str]:
    """With tracking.firstShot: how soon the first shots (`shot` = first) were stored."""
    firsts = [face for face in faces if face.metadata.get("shot") == "first"]
    if not firsts:
        return {}
    figures = {"first shots": str(len(firsts))}
    if latencies := _latencies(firsts, tap):
        figures["first-shot capture-to-store p50"] = f"{statistics.median(latencies):.0f} ms"
        figures["first-shot capture-to-store p99"] = f"{percentile(latencies, 0.99):.0f} ms"
    return figures


def detector_failure(detector: Component, code: int) -> UsageError:
    """The detector's own one-line error (its stderr is in its log), rather than a count of missing faces."""
    lines = [line for line in detector.log_text().splitlines() if line.startswith("facecap detector:")]
    cause = lines[-1].removeprefix("facecap detector:").strip() if lines else f"exit code {code}"
    what, _, hint = cause.partition(" — ")
    return UsageError(f"the detector stopped: {what}", hint or f"see {detector.log}")


def write_gallery_for(out: Path, store_url: str, faces: list[Any], client: Any, summary: dict[str, str]) -> Path:
    from .gallery import write_gallery

    return write_gallery(out / "gallery", faces, lambda key: read_body(store_url, key, client), summary=summary)


def _of_this_run(stored: list[StoredObject], this_run: set[str]) -> list[StoredObject]:
    # The store (like the logs) outlives a run in the same --out folder: report this run's faces only.
    return [face for face in stored if face.face_id in this_run]


def _stored_count(pipeline: LocalPipeline, tap: Tap) -> int:
    """How many of the faces published in this run are in the store."""
    stored = read_inventory(pipeline.store_url, s3_client=pipeline.s3_client(), with_metadata=False).faces
    return len(_of_this_run(stored, tap.ids()))


def _progress(pipeline: LocalPipeline, tap: Tap, detector_log: str) -> None:
    stats = detector_stats(detector_log)
    print(f"demo: frames {stats.get('frames', 0)}  fps {stats.get('fps', 0)}  faces {stats.get('faces', 0)}  "
          f"tracks {stats.get('tracks_total', 0)}  published {tap.count()}  stored {_stored_count(pipeline, tap)}",
          flush=True)
