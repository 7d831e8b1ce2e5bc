"""`facecap logger`: the FaceLogger, one log line per face on the local broker and a periodic summary."""

from __future__ import annotations

import argparse
import logging
from typing import Any

from ..config import config_source, load_config
from ..errors import MqttError
from ..logger.config import LoggerConfig
from ..logger.runner import FaceLoggerRunner
from ..logs import setup_logging
from .stopping import stop_on_signals

log = logging.getLogger(__name__)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "logger", help="log every face message on the local broker",
        description="Subscribe to <topicPrefix>/# on the local broker and log one line per face, messages "
                    "that break the contract with their reason, and a periodic summary.")
    parser.add_argument("--config",
                        help="JSON object or JSON file (default: $FACECAP_CONFIG); FACECAP_* variables "
                             "override single keys")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    config = load_config(LoggerConfig, "logger", config_source(args.config))
    setup_logging(config.logging.level, config.logging.format)
    try:
        runner = FaceLoggerRunner(config)
    except MqttError as exc:  # e.g. the EdgeBroker's socket is missing or not open to this user
        log.error("cannot set up the MQTT client: %s", exc)
        return 2
    return runner.run(stop_on_signals())
