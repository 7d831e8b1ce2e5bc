"""`facecap logger`: the FaceLogger, one log line per face on the local broker and a periodic summary."""

from __future__ import annotations

import argparse
from typing import Any

from ..logger.config import LoggerConfig
from .component import add_config_option, greengrass_component
from .stopping import stop_on_signals
from .subcommand import add_command


def register(subparsers: Any) -> None:
    add_config_option(add_command(subparsers, "logger", run, help="log every face message on the local broker"))


def run(args: argparse.Namespace) -> int:
    """Subscribe to <topicPrefix>/# on the local broker and log one line per face, messages that break the
    contract with their reason, and a periodic summary."""
    from ..logger.runner import FaceLoggerRunner  # here: loads the MQTT client (awscrt); see cli.py

    with greengrass_component(LoggerConfig, "logger", args) as (config, ipc):
        # An MqttError (the EdgeBroker's socket missing or not open to this user) ends in one line (cli.py).
        return FaceLoggerRunner(config, ipc=ipc).run(stop_on_signals())
