"""The `facecap` command. Each part registers its subcommand from its own module, imported lazily so that
`facecap --help` never pays for OpenCV or boto3."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from . import __version__
from .errors import ConfigError

# Each module has `register(subparsers)`, which adds one or more subcommands with `func` set to a
# callable taking the parsed arguments and returning an exit code.
COMMAND_MODULES = (
    "facecap.demo.command",
    "facecap.commands.send",
    "facecap.commands.validate_config",
    "facecap.commands.broker",
    "facecap.commands.logger",
    "facecap.detector.command",
    "facecap.commands.processor",
    "facecap.commands.outbox",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="facecap", description="Edge-to-cloud face capture.")
    parser.add_argument("--version", action="version", version=f"facecap {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except ConfigError as exc:
        print(f"facecap: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
