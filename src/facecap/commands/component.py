"""What the component commands (broker, logger, processor, detector) share: the `--config` option and the
start of a component (configuration, logging, the start checks)."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TypeVar

from ..config import ConfigModel, LoggingSettings, config_source, load_config
from ..errors import FacecapError
from ..greengrass.component import ComponentIpc

C = TypeVar("C", bound=ConfigModel)

CONFIG_HELP = "JSON object or JSON file (default: $FACECAP_CONFIG); FACECAP_* variables override single keys"


def add_config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help=CONFIG_HELP)


def start_component(model: type[C], component: str, args: argparse.Namespace) -> C:
    """Load the component's configuration (--config, else $FACECAP_CONFIG), set up logging, then raise a
    ConfigError naming every problem the start checks find."""
    config = load_config(model, component, config_source(args.config))
    _set_up(config, component)
    return config


@contextmanager
def greengrass_component(model: type[C], component: str,
                         args: argparse.Namespace) -> Iterator[tuple[C, ComponentIpc[C]]]:
    """An edge component's start: its configuration (over Greengrass IPC inside Greengrass, else --config or
    $FACECAP_CONFIG), logging and the start checks; a FacecapError inside (or from the checks) is reported to
    Greengrass as ERRORED before it goes on to the CLI's one line."""
    ipc = ComponentIpc(model, component)
    try:
        config = ipc.load(config_source(args.config))
        _set_up(config, component)
        yield config, ipc
    except FacecapError as exc:
        ipc.report_errored(str(exc))
        raise
    finally:
        ipc.close()


def _set_up(config: ConfigModel, component: str) -> None:
    from ..logs import setup_logging
    from ..validation import require

    # Every component model has a `logging` section; ConfigModel itself does not, hence getattr.
    settings: LoggingSettings = getattr(config, "logging")  # noqa: B009
    setup_logging(settings.level, settings.format)  # first: DEBUG shows tracebacks
    require(component, config)
