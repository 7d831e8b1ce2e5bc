"""`facecap demo`: run the whole pipeline on this machine and show what it stored.

Part of the development kit (facecap.devkit): the device wheel leaves this module out, and `facecap demo`
there says so in one line (see facecap.cli)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from ..devkit.demo.pipeline import LocalPipeline, PipelineSettings
from ..devkit.demo.runner import DemoRunner, find_model
from ..release import MODEL_FILE

log = logging.getLogger(__name__)


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
                                                   f"$FACECAP_SHARED/models/{MODEL_FILE}; else Haar)")
    parser.add_argument("--mode", choices=("best", "every"), default="best", help="tracking mode (default best)")
    parser.add_argument("--first-shot", action="store_true",
                        help="tracking.firstShot: also send each person's first good shot at once (best mode)")
    parser.set_defaults(func=run)


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
        from ..devkit.demo.video import render_video

        sample = out / "sample.avi"
        frames = render_video(sample)
        source = str(sample)
        print(f"demo: rendered a sample video of {frames} frames (three visits) to {sample}", flush=True)
    return DemoRunner(pipeline, out, args.duration).run(source)
