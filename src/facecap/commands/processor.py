"""`facecap processor` (run it) and `facecap processor healthcheck` (the container health check)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from .stopping import stop_on_signals

log = logging.getLogger(__name__)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "processor",
        help="store faces from the cloud broker in S3 or a folder",
        description="Subscribe to faces with a persistent session, store each one (s3:// or file://), and "
                    "acknowledge it only once stored. Configured by --config and FACECAP_* variables.",
    )
    parser.add_argument("--config", help="JSON object or JSON file (default: $FACECAP_CONFIG); FACECAP_* variables "
                                          "override single keys")
    parser.set_defaults(func=run)
    actions = parser.add_subparsers(dest="processor_action", metavar="ACTION")
    health = actions.add_parser("healthcheck", help="exit 0 if the running processor's heartbeat is fresh",
                                description="Read the heartbeat file the processor writes and exit 0 if it is "
                                            "fresh and the processor is connected, 1 otherwise.")
    # SUPPRESS: an absent option here must not erase a --config given before `healthcheck`.
    health.add_argument("--config", default=argparse.SUPPRESS, help="same configuration as the processor's")
    health.add_argument("--max-age", type=float, default=None,
                        help="seconds a heartbeat may be old (default: 3 x heartbeatIntervalSeconds)")
    health.add_argument("--file", default=None, help="heartbeat file (default: heartbeatFile from the config)")
    health.set_defaults(func=run_healthcheck)


def run(args: argparse.Namespace) -> int:
    from ..config import config_source, load_config
    from ..errors import MqttConnectError
    from ..logs import setup_logging
    from ..processor.config import ProcessorConfig
    from ..processor.runner import ProcessorRunner
    from ..storage import StoreError, open_store

    config = load_config(ProcessorConfig, "processor", config_source(args.config))
    setup_logging(config.logging.level, config.logging.format)
    stop = stop_on_signals(log, "draining")
    try:
        store = open_store(config.store, server_side_encryption=config.server_side_encryption,
                           kms_key_id=config.kms_key_id, max_connections=config.workers + 2,
                           s3_client=config.s3_client)
        runner = ProcessorRunner(config, store)
    except (MqttConnectError, StoreError) as exc:  # e.g. a missing certificate file, no AWS region
        log.error("cannot start: %s", exc)
        return 1
    return runner.run(stop)


def run_healthcheck(args: argparse.Namespace) -> int:
    from ..config import config_source, load_config
    from ..processor.config import ProcessorConfig
    from ..processor.heartbeat import check_heartbeat

    config = load_config(ProcessorConfig, "processor", config_source(getattr(args, "config", None)))
    path = Path(args.file or config.heartbeat_file)
    max_age = args.max_age if args.max_age is not None else 3 * config.heartbeat_interval_seconds
    healthy, explanation = check_heartbeat(path, max_age)
    print(explanation, file=sys.stdout if healthy else sys.stderr)
    return 0 if healthy else 1
