"""What the component commands (broker, logger, processor, detector) share: the `--config` option and the
start of a component (configuration, logging, the start checks)."""

from __future__ import annotations

import argparse
from typing import TypeVar

from ..config import ConfigModel, LoggingSettings, config_source, load_config

C = TypeVar("C", bound=ConfigModel)

CONFIG_HELP = "JSON object or JSON file (default: $FACECAP_CONFIG); FACECAP_* variables override single keys"


def add_config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help=CONFIG_HELP)


def start_component(model: type[C], component: str, args: argparse.Namespace) -> C:
    """Load the component's configuration (--config, else $FACECAP_CONFIG), set up logging, then raise a
    ConfigError naming every problem the start checks find."""
    from ..logs import setup_logging
    from ..validation import require

    config = load_config(model, component, config_source(args.config))
    # Every component model has a `logging` section; ConfigModel itself does not, hence getattr.
    settings: LoggingSettings = getattr(config, "logging")  # noqa: B009
    setup_logging(settings.level, settings.format)  # first: DEBUG shows tracebacks
    require(component, config)
    return config
