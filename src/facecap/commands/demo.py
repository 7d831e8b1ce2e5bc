"""`facecap demo`: run the whole pipeline on this machine and show what it stored.

Part of the development kit (facecap.devkit): the device wheel leaves this module out, and `facecap demo`
there says so in one line (see facecap.cli)."""

from __future__ import annotations

import argparse
import contextlib
import fcntl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import UsageError
from ..release import MODEL_FILE
from .subcommand import add_command


def register(subparsers: Any) -> None:
    parser = add_command(subparsers, "demo", run,
                         help="run the whole pipeline locally (no camera, AWS or Docker needed)")
    parser.add_argument("--source", help="camera source instead of the sample video: a V4L2 index (0), a "
                                         "file, an RTSP/HTTP URL or a GStreamer pipeline")
    parser.add_argument("--duration", type=float, default=0.0,
                        help="seconds to run a live --source (default: until Ctrl-C)")
    parser.add_argument("--store", choices=("file", "s3"), default="file",
                        help="file: a local folder (default); s3: the local SeaweedFS S3 server")
    parser.add_argument("--out", type=Path, default=Path("demo-output"), help="output folder (default: demo-output)")
    parser.add_argument("--model", help=f"YuNet model (default: $FACECAP_MODEL, then $FACECAP_SHARED/models/"
                                        f"{MODEL_FILE}, then the cache ~/.cache/facecap, else downloaded once "
                                        "into it; Haar when offline)")
    parser.add_argument("--mode", choices=("best", "every"), default="best", help="tracking mode (default best)")
    parser.add_argument("--first-shot", action="store_true",
                        help="tracking.firstShot: also send each person's first good shot at once (best mode)")
    parser.add_argument("--cameras", type=int, default=1, metavar="N",
                        help="render N different sample videos and run them as N cameras of one detector "
                        "(default 1; not with --source)")


# What the demo needs beyond the base package (pyproject.toml's extras; make setup installs them all).
DEMO_EXTRAS = 'pip install -e ".[detector,processor,demo]" in the checkout (or make setup)'


def run(args: argparse.Namespace) -> int:
    """Start a cloud broker with TLS and a device identity, the EdgeBroker with its bridge, the FaceLogger, the
    processor and the FaceDetector on this machine; feed the detector a rendered sample video (or --source),
    wait until every published face is stored, then print a summary and write an HTML gallery."""
    try:
        return _run(args)
    except ModuleNotFoundError as exc:  # an extra left out: OpenCV, scikit-image, boto3
        raise UsageError(f"the demo needs the Python module {exc.name}, which is not installed",
                         f"install the demo's extras: {DEMO_EXTRAS}") from None


def _run(args: argparse.Namespace) -> int:
    from ..logs import setup_logging

    if args.cameras < 1 or (args.cameras > 1 and args.source is not None):
        raise UsageError(f"--cameras {args.cameras}: must be at least 1, and 1 with --source",
                         "give --cameras N >= 1 for the sample videos, or one --source")
    setup_logging()
    out: Path = args.out.resolve()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"--out {out}: cannot create the folder ({exc.strerror})",
                         "choose a folder that can be created") from None
    with _claimed(out):
        return _run_in(args, out)


def _run_in(args: argparse.Namespace, out: Path) -> int:
    from ..detector.model import find_model
    from ..devkit.demo.pipeline import LocalPipeline, PipelineSettings
    from ..devkit.demo.runner import DemoRunner

    found = find_model("", args.model, download=True, notify=lambda text: print(f"demo: {text}", flush=True))
    model = Path(found.path) if found.path else None
    pipeline = LocalPipeline(PipelineSettings(workdir=out, store=args.store, model=model,
                                              detector_overrides={"tracking": {"mode": args.mode,
                                                                                 "firstShot": args.first_shot}}))
    source: str | list[str] = args.source if args.source is not None else sample_videos(out, args.cameras)
    return DemoRunner(pipeline, out, args.duration).run(source)


@contextlib.contextmanager
def _claimed(out: Path) -> Iterator[None]:
    """One demo at a time in a folder: a second one would write a new CA and new passwords under the first
    one's running parts, and both would fail without saying why."""
    try:
        handle = open(out / ".demo.lock", "a")  # noqa: SIM115 - held for the whole run
    except OSError as exc:
        raise UsageError(f"--out {out}: cannot write in the folder ({exc.strerror})",
                         "choose a folder you can write to") from None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UsageError(f"--out {out}: another facecap demo is running in this folder",
                             "wait for it to end, or give another --out") from None
        yield  # the lock goes with the file's closing


def sample_videos(out: Path, cameras: int) -> list[str]:
    """One rendered sample per camera, each with its own visits (the first is the classic sample.avi)."""
    from ..devkit.demo.video import render_camera_video

    paths = []
    for index in range(cameras):
        sample = out / ("sample.avi" if index == 0 else f"sample-cam{index}.avi")
        frames = render_camera_video(sample, index)
        paths.append(str(sample))
        print(f"demo: rendered a sample video of {frames} frames (three visits) to {sample}", flush=True)
    return paths
