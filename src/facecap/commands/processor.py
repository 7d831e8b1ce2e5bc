"""`facecap processor` (run it) and `facecap processor healthcheck` (the container health check)."""

from __future__ import annotations

import argparse
import logging
import math
import sys
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .component import add_config_option, start_component
from .stopping import stop_on_signals
from .subcommand import add_command

log = logging.getLogger(__name__)


def register(subparsers: Any) -> None:
    parser = add_command(subparsers, "processor", run, help="store faces from the cloud broker in S3 or a folder")
    add_config_option(parser)
    actions = parser.add_subparsers(dest="processor_action", metavar="ACTION")
    health = add_command(actions, "healthcheck", run_healthcheck,
                         help="exit 0 if the running processor's heartbeat is fresh")
    # SUPPRESS: an absent option here must not erase a --config given before `healthcheck`.
    health.add_argument("--config", default=argparse.SUPPRESS, help="same configuration as the processor's")
    health.add_argument("--max-age", type=float, default=None,
                        help="seconds a heartbeat may be old (default: 3 x heartbeatIntervalSeconds)")
    health.add_argument("--file", default=None, help="heartbeat file (default: heartbeatFile from the config)")
    health.add_argument("--unhealthy-after", type=float, default=None, metavar="SECONDS",
                        help="seconds disconnected, or failing to store with faces pending, before it is unhealthy "
                             "(default: unhealthyAfterSeconds)")


def run(args: argparse.Namespace) -> int:
    """Subscribe to faces with a persistent session, store each one (s3:// or file://), and acknowledge it only
    once stored. Configured by --config and FACECAP_* variables."""
    from ..errors import UnavailableError
    from ..processor.config import ProcessorConfig
    from ..processor.runner import ProcessorRunner
    from ..storage import StoreError, open_store

    config = start_component(ProcessorConfig, "processor", args)
    stop = stop_on_signals(log, "draining")
    try:
        store = open_store(config.store, server_side_encryption=config.server_side_encryption,
                           kms_key_id=config.kms_key_id, max_connections=config.workers + 2,
                           s3_client=config.s3_client)
    except StoreError as exc:  # e.g. no AWS region
        raise UnavailableError(f"cannot start: {exc}", "set what it names and start again") from None
    # An MqttConnectError (e.g. a certificate that does not load) ends in one line (cli.py).
    return ProcessorRunner(config, store).run(stop)


def run_healthcheck(args: argparse.Namespace) -> int:
    """Read the heartbeat file the processor writes and exit 0 if it is fresh and the processor is connected, 1
    otherwise: also when it has been disconnected, or its store failing with faces pending, for longer than
    unhealthyAfterSeconds."""
    from ..config import config_source, with_flags
    from ..processor.config import ProcessorConfig
    from ..processor.heartbeat import check_heartbeat

    flags = {"--unhealthy-after": ("unhealthyAfterSeconds", args.unhealthy_after)}
    config = with_flags(ProcessorConfig, "processor", flags, base=config_source(getattr(args, "config", None)))
    path = Path(args.file or config.heartbeat_file)
    if args.max_age is not None and not (math.isfinite(args.max_age) and args.max_age > 0):
        raise ConfigError("processor", [("--max-age", "must be a number of seconds above 0")])
    max_age = args.max_age if args.max_age is not None else 3 * config.heartbeat_interval_seconds
    healthy, explanation = check_heartbeat(path, max_age, config.unhealthy_after_seconds)
    if healthy:
        print(explanation)
    else:
        print(f"facecap processor healthcheck: {explanation}", file=sys.stderr)
    return 0 if healthy else 1
