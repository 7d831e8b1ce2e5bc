"""`facecap detector` (the component's long-running process) and `facecap detect` (a quick check on
images). OpenCV is imported only when one of them runs, so `facecap --help` stays light."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from .stopping import stop_on_signals

log = logging.getLogger(__name__)

COMPONENT = "detector"


def register(subparsers: Any) -> None:
    detector = subparsers.add_parser(
        "detector",
        help="run the face detector on a camera and publish faces to MQTT",
        description="Read a camera, detect and track faces, and publish the best shot of each as a contract "
        "v1 message. Stops on SIGTERM after flushing what is in flight.",
    )
    detector.add_argument("--config", metavar="JSON|FILE",
                          help="configuration as a JSON object or a JSON file (default: $FACECAP_CONFIG, else "
                               "defaults)")
    detector.add_argument("--model", metavar="PATH",
                          help="YuNet model, used when detection.modelPath is empty (default: $FACECAP_MODEL)")
    detector.set_defaults(func=run)

    detect = subparsers.add_parser(
        "detect",
        help="detect faces in image files",
        description="Detect faces in images. With --json, print one JSON object per image: "
        '{"image": PATH, "width": W, "height": H, "faces": [{"bbox": [x, y, w, h], "score": S}, ...]} '
        "in the image's own pixels.",
    )
    detect.add_argument("images", nargs="+", metavar="IMAGE")
    detect.add_argument("--json", action="store_true", help="one JSON line per image")
    detect.add_argument("--detector", choices=("yunet", "haar"), default="yunet")
    detect.add_argument("--model", metavar="PATH", help="YuNet model (default: $FACECAP_MODEL)")
    detect.add_argument("--width", type=int, metavar="PIXELS",
                        help="detect on images scaled down to this width (0: full size; default: the detector "
                        "component's scale from detection.minFaceSize)")
    detect.add_argument("--threshold", type=float, default=0.7, help="YuNet score threshold (default 0.7)")
    detect.set_defaults(func=run_detect)


# --- facecap detector ----------------------------------------------------------------------------------

def run(args: argparse.Namespace) -> int:
    from ..config import config_source, load_config
    from ..detector.config import DetectorConfig
    from ..detector.runner import DetectorRunner
    from ..errors import MqttError
    from ..logs import setup_logging

    config = load_config(DetectorConfig, COMPONENT, config_source(args.config))
    setup_logging(config.logging.level, config.logging.format)
    try:
        runner = DetectorRunner.build(config, args.model)
    except MqttError as exc:
        log.error("cannot set up the MQTT client: %s", exc)
        return 2

    return runner.run(stop_on_signals(log, "finishing"))


# --- facecap detect ---------------------------------------------------------------------------------------

def run_detect(args: argparse.Namespace) -> int:
    import cv2

    from ..detector.config import DetectionSettings, resolve_model_path
    from ..detector.detection import create_detector
    from ..detector.scaling import Scaling
    from ..errors import ConfigError

    model_path, origin = resolve_model_path("", args.model)
    if args.detector == "yunet" and not model_path:
        raise ConfigError("detect", [("--model", "YuNet needs a model: pass --model PATH or set FACECAP_MODEL")])
    defaults = DetectionSettings()
    scaling = defaults.scaling() if args.width is None else Scaling(width=args.width)
    detector = create_detector(args.detector, model_path, origin or "--model", score_threshold=args.threshold,
                               scaling=scaling, min_face_size=1)
    failures = 0
    for path in args.images:
        image = cv2.imread(path, cv2.IMREAD_COLOR) if Path(path).is_file() else None
        if image is None:
            print(f"facecap detect: cannot read {path} as an image", file=sys.stderr)
            failures += 1
            continue
        height, width = image.shape[:2]
        faces = detector.detect(image)
        if args.json:
            print(json.dumps({
                "image": path, "width": width, "height": height,
                "faces": [{"bbox": [round(v) for v in face.bbox], "score": round(face.score, 4)} for face in faces],
            }), flush=True)
        else:
            print(f"{path}: {width}x{height}, {len(faces)} face{'s' if len(faces) != 1 else ''}")
            for face in faces:
                x, y, w, h = (round(v) for v in face.bbox)
                print(f"  x={x} y={y} w={w} h={h} score={face.score:.3f}")
    return 1 if failures else 0
