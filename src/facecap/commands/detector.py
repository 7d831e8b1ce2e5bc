"""`facecap detector` (the component's long-running process) and `facecap detect` (a quick check on
images). OpenCV is imported only when one of them runs, so `facecap --help` stays light."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from .component import add_config_option, greengrass_component
from .stopping import stop_on_signals
from .subcommand import add_command

log = logging.getLogger(__name__)

COMPONENT = "detector"


def register(subparsers: Any) -> None:
    detector = add_command(subparsers, "detector", run,
                           help="run the face detector on a camera and publish faces to MQTT")
    add_config_option(detector)
    detector.add_argument("--model", metavar="PATH",
                          help="YuNet model, used when detection.modelPath is empty (default: $FACECAP_MODEL)")

    detect = add_command(subparsers, "detect", run_detect, help="detect faces in image files")
    detect.add_argument("images", nargs="+", metavar="IMAGE")
    detect.add_argument("--json", action="store_true", help="one JSON line per image")
    detect.add_argument("--detector", choices=("yunet", "haar"), default="yunet")
    detect.add_argument("--model", metavar="PATH",
                        help="YuNet model (default: $FACECAP_MODEL, $FACECAP_SHARED/models, the cache "
                             "~/.cache/facecap, else downloaded once into it; Haar when offline)")
    detect.add_argument("--width", type=int, metavar="PIXELS",
                        help="detect on images scaled down to this width (0: full size; default: the detector "
                        "component's scale from detection.minFaceSize)")
    detect.add_argument("--threshold", type=float,
                        help="YuNet score threshold, 0 to 1 (default: detection.scoreThreshold, 0.7)")


# --- facecap detector ----------------------------------------------------------------------------------

def run(args: argparse.Namespace) -> int:
    """Read a camera, detect and track faces, and publish the best shot of each as a contract v1 message. Stops
    on SIGTERM after flushing what is in flight."""
    from ..detector.config import DetectorConfig
    from ..detector.runner import DetectorRunner

    with greengrass_component(DetectorConfig, COMPONENT, args) as (config, ipc):
        # A ConfigError or MqttError ends in one line (cli.py); Greengrass hears ERRORED first.
        runner = DetectorRunner.build(config, args.model, ipc=ipc)
        code = runner.run(stop_on_signals(log, "finishing"))
    if runner.capturing():
        # A capture thread still inside OpenCV (a stream that never answers) would be unwound in the middle of
        # that call by the interpreter's exit, which aborts the process (SIGABRT, and a core file on the
        # device) instead of exiting with the code. Every face is sent or saved and everything is closed by
        # now, so leave without that unwinding.
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


# --- facecap detect ---------------------------------------------------------------------------------------

def run_detect(args: argparse.Namespace) -> int:
    """Detect faces in images. With --json, print one JSON object per image: {"image": PATH, "width": W,
    "height": H, "faces": [{"bbox": [x, y, w, h], "score": S}, ...]} in the image's own pixels."""
    from ..config import with_flags
    from ..detector.config import DetectorConfig
    from ..detector.detection import create_detector
    from ..detector.model import find_model

    # The flags go through the detector's own model, so they take exactly what its keys take.
    settings = with_flags(DetectorConfig, "detect", {
        "--threshold": ("detection.scoreThreshold", args.threshold),
        "--width": ("detection.width", args.width),
    }, env={}).detection
    kind = args.detector
    model = find_model("", args.model, download=kind == "yunet", notify=_notify)
    if kind == "yunet" and not model.path:
        kind = "haar"  # find_model said why, in one line
    detector = create_detector(kind, model.path, model.origin or "--model", score_threshold=settings.score_threshold,
                               scaling=settings.scaling(), min_face_size=1)
    failures = sum(not _detect_one(detector, path, args.json) for path in args.images)
    return 1 if failures else 0


def _notify(message: str) -> None:
    print(f"facecap detect: {message}", file=sys.stderr, flush=True)


def _detect_one(detector: Any, path: str, as_json: bool) -> bool:
    """Print the faces of one image; False when it cannot be read (a JSON record with "error" says so)."""
    import cv2

    image = cv2.imread(path, cv2.IMREAD_COLOR) if Path(path).is_file() else None
    if image is None:
        reason = "no such file" if not Path(path).exists() else "not a readable image"
        _notify(f"{path}: {reason} — check the path and that it is a JPEG or PNG")
        if as_json:
            print(json.dumps({"image": path, "error": reason}), flush=True)
        return False
    height, width = image.shape[:2]
    faces = detector.detect(image)
    if as_json:
        print(json.dumps({
            "image": path, "width": width, "height": height,
            "faces": [{"bbox": [round(v) for v in face.bbox], "score": round(face.score, 4)} for face in faces],
        }), flush=True)
    else:
        print(f"{path}: {width}x{height}, {len(faces)} face{'s' if len(faces) != 1 else ''}")
        for face in faces:
            x, y, w, h = (round(v) for v in face.bbox)
            print(f"  x={x} y={y} w={w} h={h} score={face.score:.3f}")
    return True
