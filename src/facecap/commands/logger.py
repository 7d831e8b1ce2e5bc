"""`facecap logger`: the FaceLogger, one log line per face on the local broker and a periodic summary."""

from __future__ import annotations

import argparse
from typing import Any

from ..config import config_source
from ..errors import FacecapError
from ..greengrass.component import ComponentIpc
from ..logger.config import LoggerConfig
from ..logger.runner import FaceLoggerRunner
from ..logs import setup_logging
from ..validation import require
from .stopping import stop_on_signals


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
    component = ComponentIpc(LoggerConfig, "logger")
    config = component.load(config_source(args.config))
    setup_logging(config.logging.level, config.logging.format)  # first: DEBUG shows tracebacks
    try:
        require("logger", config)
        # An MqttError (the EdgeBroker's socket missing or not open to this user) ends in one line (cli.py).
        return FaceLoggerRunner(config, ipc=component).run(stop_on_signals())
    except FacecapError as exc:
        component.report_errored(str(exc))
        raise
    finally:
        component.close()
