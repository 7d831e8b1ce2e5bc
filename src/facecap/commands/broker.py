"""`facecap broker`: run the EdgeBroker (Mosquitto with the cloud bridge); `facecap broker render` prints
the mosquitto.conf it would run, with the password masked, and says whether the broker could start."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..broker.config import BrokerConfig
from ..broker.preflight import preflight_problems
from ..broker.runner import EdgeBrokerRunner
from ..config import config_source, load_config
from ..errors import ConfigError, FacecapError
from ..greengrass.component import ComponentIpc
from ..logs import setup_logging
from .component import add_config_option
from .subcommand import add_command


def register(subparsers: Any) -> None:
    parser = add_command(subparsers, "broker", run,
                         help="run the EdgeBroker: Mosquitto with a bridge to the cloud broker")
    parser.add_argument("action", nargs="?", choices=("run", "render"), default="run",
                        help="run (default) or render")
    add_config_option(parser)


def run(args: argparse.Namespace) -> int:
    """Render mosquitto.conf from the EdgeBroker configuration into the working folder and run Mosquitto in
    the foreground. `render` only prints the file (password masked)."""
    if args.action == "render":
        return render(EdgeBrokerRunner(load_config(BrokerConfig, "broker", config_source(args.config)), Path.cwd()))
    component = ComponentIpc(BrokerConfig, "broker")
    config = component.load(config_source(args.config))
    setup_logging(config.logging.level, config.logging.format)
    runner = EdgeBrokerRunner(config, Path.cwd(), component)
    try:
        code = runner.run()
    except FacecapError as exc:
        component.report_errored(str(exc))
        raise
    finally:
        component.close()
    return code


def render(runner: EdgeBrokerRunner) -> int:
    # Checked first, so an error leaves stdout empty rather than half a configuration to redirect.
    problems = preflight_problems(runner.config, runner.work_dir, starting=False)
    if problems:
        raise ConfigError("broker", problems, hint="the broker would not start: fix these keys")
    sys.stdout.write(runner.conf_text(masked=True))
    if runner.bridge_unset:
        print("facecap: bridge.host is empty: the broker would run local-only", file=sys.stderr)
    return 0
