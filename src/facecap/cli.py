"""The `facecap` command. Each part registers its subcommand from its own module in facecap.commands, which
imports the part itself only when the command runs, so that `facecap --help` never pays for OpenCV or boto3.

`facecap demo` belongs to the development kit, which the device wheel leaves out: there the command is
still listed, and running it says so in one line instead of failing with a traceback."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import Any

from . import __version__
from .errors import ConfigError, GreengrassError

# Each module has `register(subparsers)`, which adds one or more subcommands with `func` set to a
# handler taking the parsed arguments and returning an exit code (`run`, or `run_<action>` for a second
# subcommand of the same module).
COMMAND_MODULES = (
    "facecap.commands.demo",
    "facecap.commands.send",
    "facecap.commands.validate_config",
    "facecap.commands.broker",
    "facecap.commands.logger",
    "facecap.commands.detector",
    "facecap.commands.processor",
    "facecap.commands.fleet",
)
# Command modules of the development kit (not in the device wheel), with the subcommand each adds.
DEVKIT_COMMANDS = {"facecap.commands.demo": "demo"}
DEVKIT_MISSING = ("the {command} is part of the development kit, which this installation (the device wheel) "
                  "leaves out; run it from a checkout of facecap (pip install -e .)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="facecap", description="Edge-to-cloud face capture.")
    parser.add_argument("--version", action="version", version=f"facecap {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        _register(name, subparsers)
    return parser


def _register(module_name: str, subparsers: Any) -> None:
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if module_name not in DEVKIT_COMMANDS or not (missing == module_name or missing.startswith("facecap.devkit")):
            raise
        _register_missing(subparsers, DEVKIT_COMMANDS[module_name])
        return
    module.register(subparsers)


def _register_missing(subparsers: Any, command: str) -> None:
    # Takes every argument as a positional (no option prefix, no --help), so whatever the user typed
    # after `demo` ends in the one line below rather than in a usage error.
    parser = subparsers.add_parser(command, help="(development kit: not installed here)", add_help=False,
                                   prefix_chars="\0", description=DEVKIT_MISSING.format(command=command))
    parser.add_argument("ignored", nargs="*")

    def run(_args: argparse.Namespace) -> int:
        print("facecap: " + DEVKIT_MISSING.format(command=command), file=sys.stderr)
        return 2

    parser.set_defaults(func=run)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except (ConfigError, GreengrassError) as exc:
        print(f"facecap: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
