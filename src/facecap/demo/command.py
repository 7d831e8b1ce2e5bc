"""`facecap demo`: run the whole pipeline on this machine and show what it stored."""

from __future__ import annotations

import argparse
import logging
import os
import re
import statistics
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from ..contract import parse_message
from ..errors import ContractError
from ..mqtt import MqttClient, MqttSettings, ReceivedMessage
from .inventory import StoredObject, read_body, read_inventory
from .pipeline import LocalPipeline, PipelineSettings, wait_until

log = logging.getLogger(__name__)
MODEL_NAME = "face_detection_yunet_2023mar.onnx"


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "demo",
        help="run the whole pipeline locally (no camera, AWS or Docker needed)",
        description="Start a cloud broker with TLS and a device identity, the EdgeBroker with its bridge, the "
        "FaceLogger, the processor and the FaceDetector on this machine; feed the detector a rendered sample "
        "video (or --source), wait until every published face is stored, then print a summary and write an "
        "HTML gallery.",
    )
    parser.add_argument("--source", help="camera source instead of the sample video: a V4L2 index (0), a "
                                         "file, an RTSP/HTTP URL or a GStreamer pipeline")
    parser.add_argument("--duration", type=float, default=0.0,
                        help="seconds to run a live --source (default: until Ctrl-C)")
    parser.add_argument("--store", choices=("file", "s3"), default="file",
                        help="file: a local folder (default); s3: the local SeaweedFS S3 server")
    parser.add_argument("--out", type=Path, default=Path("demo-output"), help="output folder (default: demo-output)")
    parser.add_argument("--model", type=Path, help=f"YuNet model (default: $FACECAP_MODEL, then "
                                                   f"$FACECAP_SHARED/models/{MODEL_NAME}; else Haar)")
    parser.add_argument("--mode", choices=("best", "every"), default="best", help="tracking mode (default best)")
    parser.add_argument("--first-shot", action="store_true",
                        help="tracking.firstShot: also send each person's first good shot at once (best mode)")
    parser.set_defaults(func=run)


def find_model(explicit: Path | None) -> Path | None:
    candidates = [explicit, Path(os.environ["FACECAP_MODEL"]) if os.environ.get("FACECAP_MODEL") else None]
    shared = os.environ.get("FACECAP_SHARED")
    if shared:
        candidates.append(Path(shared) / "models" / MODEL_NAME)
    return next((c.resolve() for c in candidates if c is not None and c.is_file()), None)


class Tap:
    """Watches the edge broker as a plain subscriber: which faces were published, and when."""

    def __init__(self, port: int) -> None:
        self.face_ids: dict[str, datetime | None] = {}
        self.invalid = 0
        self._lock = threading.Lock()
        self.client = MqttClient(MqttSettings(host="127.0.0.1", port=port), f"demo-tap-{os.getpid()}",
                                 on_message=self._on_message)

    def start(self) -> None:
        self.client.start()
        self.client.subscribe("faces/#")

    def _on_message(self, message: ReceivedMessage) -> None:
        try:
            face = parse_message(message.topic, message.payload, message.content_type, message.user_properties)
        except ContractError:
            with self._lock:
                self.invalid += 1
            return
        with self._lock:
            self.face_ids[face.face_id] = face.captured_at

    def count(self) -> int:
        with self._lock:
            return len(self.face_ids)

    def ids(self) -> set[str]:
        with self._lock:
            return set(self.face_ids)


def detector_stats(log_text: str) -> dict[str, str]:
    """The detector's last `stats: key=value ...` line."""
    lines = [line for line in log_text.splitlines() if "stats: " in line]
    if not lines:
        return {}
    return dict(re.findall(r"(\w+)=(\S+)", lines[-1].split("stats: ", 1)[1]))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def run(args: argparse.Namespace) -> int:
    from ..logs import setup_logging

    setup_logging()
    out: Path = args.out.resolve()
    model = find_model(args.model)
    if model is None:
        log.warning("no YuNet model found (--model, FACECAP_MODEL or FACECAP_SHARED): the detector falls back "
                    "to Haar cascades, which find fewer faces")
    pipeline = LocalPipeline(PipelineSettings(workdir=out, store=args.store, model=model,
                                              detector_overrides={"tracking": {"mode": args.mode,
                                                                                 "firstShot": args.first_shot}}))
    source = args.source
    if source is None:
        from .video import render_video

        sample = out / "sample.avi"
        frames = render_video(sample)
        source = str(sample)
        print(f"demo: rendered a sample video of {frames} frames (three visits) to {sample}", flush=True)
    try:
        return _run_pipeline(pipeline, source, args, out)
    finally:
        pipeline.stop_all()


def _run_pipeline(pipeline: LocalPipeline, source: str, args: argparse.Namespace, out: Path) -> int:
    started = time.monotonic()
    pipeline.start_cloud()
    print(f"demo: cloud broker with TLS on 127.0.0.1:{pipeline.cloud.port if pipeline.cloud else '?'}, "
          f"store {pipeline.store_url}", flush=True)
    pipeline.start_processor()
    pipeline.start_edge_broker()
    pipeline.start_logger()
    tap = Tap(pipeline.edge_port)
    tap.start()
    detector = pipeline.start_detector(source)
    print(f"demo: edge broker on 127.0.0.1:{pipeline.edge_port} bridged to the cloud; detector reading {source}",
          flush=True)
    deadline = time.monotonic() + args.duration if args.duration else None
    try:
        while detector.running and (deadline is None or time.monotonic() < deadline):
            time.sleep(2)
            _progress(pipeline, tap, detector.log_text())
    except KeyboardInterrupt:
        print("demo: stopping the detector", flush=True)
    detector.stop()
    published = tap.count()
    all_stored = wait_until(lambda: _stored_count(pipeline, tap) >= published, timeout=60, interval=0.5)
    time.sleep(1)
    tap.client.stop()
    this_run = tap.ids()
    inventory = read_inventory(pipeline.store_url, s3_client=pipeline.s3_client())
    faces = _of_this_run(inventory.faces, this_run)
    stats = detector_stats(detector.log_text())
    latencies = _latencies(faces, tap)
    first_latencies = _latencies([face for face in faces if face.metadata.get("shot") == "first"], tap)
    summary = {
        "frames": stats.get("frames", "?"),
        "faces detected": stats.get("faces", "?"),
        "tracks": stats.get("tracks_total", "?"),
        "messages published": str(published),
        "objects stored": str(len(faces)),
        "quarantined": str(len(inventory.quarantined)),
        "dropped by the detector": stats.get("dropped", "?"),
        # Capture to stored. In best-shot mode a face is sent when its track ends, seconds after the
        # best frame was captured, so this is mostly the time the person stayed in view.
        "capture-to-store p50": f"{statistics.median(latencies):.0f} ms" if latencies else "n/a",
        "capture-to-store p99": f"{percentile(latencies, 0.99):.0f} ms" if latencies else "n/a",
        **({"first shots": str(len(first_latencies)),
            "first-shot capture-to-store p50": f"{statistics.median(first_latencies):.0f} ms",
            "first-shot capture-to-store p99": f"{percentile(first_latencies, 0.99):.0f} ms"}
           if first_latencies else {}),
        "run time": f"{time.monotonic() - started:.1f} s",
    }
    client = pipeline.s3_client()
    gallery = write_gallery_for(out, pipeline.store_url, faces, client, summary)
    print("\ndemo: summary")
    for key, value in summary.items():
        print(f"  {key:<32} {value}")
    print(f"  {'gallery':<32} {gallery}")
    print(f"  {'logs':<32} {pipeline.logs}")
    missing = this_run - {face.face_id for face in faces}
    if not all_stored or missing or published == 0:
        print(f"demo: FAILED: {len(missing)} published face(s) not stored, {published} published", flush=True)
        return 1
    return 0


def _latencies(faces: list[StoredObject], tap: Tap) -> list[float]:
    """Milliseconds from each face's capture (its frame) to its object in the store."""
    return [(face.stored_at - captured.timestamp()) * 1000 for face in faces
            if (captured := tap.face_ids.get(face.face_id)) is not None]


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
