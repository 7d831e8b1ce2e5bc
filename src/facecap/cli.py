"""The `facecap` command. Each part registers its subcommand from its own module in facecap.commands, which
imports the part itself only when the command runs, so that `facecap --help` never pays for OpenCV or boto3.

`facecap demo` belongs to the development kit, which the device wheel leaves out: there the command is
still listed, and running it says so in one line instead of failing with a traceback."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import traceback
from collections.abc import Sequence
from typing import Any, NoReturn

from . import __version__
from .errors import ConfigError, FacecapError, UsageError

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
    "facecap.commands.outbox",
    "facecap.commands.fleet",
)
# Command modules of the development kit (not in the device wheel), with the subcommand each adds.
DEVKIT_COMMANDS = {"facecap.commands.demo": "demo"}
DEVKIT_MISSING = ("the {command} is part of the development kit, which this installation (the device wheel) "
                  "leaves out; run it from a checkout of facecap (make setup, or pip install -e "
                  "\".[detector,processor,demo]\")")


class OneLineParser(argparse.ArgumentParser):
    """A usage mistake (an unknown option, a flag value of the wrong type, a missing argument) in one line,
    like every other mistake, instead of the usage text followed by the error. Subcommands use this class
    too (argparse makes subparsers of the parser's own class)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} — see {self.prog} --help\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="facecap", description="Edge-to-cloud face capture.")
    parser.add_argument("--version", action="version", version=f"facecap {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="print the traceback of an error too (anywhere on the line)")
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
    arguments = list(sys.argv[1:] if argv is None else argv)
    # --debug is taken anywhere on the line, so it can be added to any command as typed.
    debug = "--debug" in arguments
    args = build_parser().parse_args([a for a in arguments if a != "--debug"])
    try:
        code: int = args.func(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`facecap outbox list DIR | head`): nothing to report. Stdout goes to
        # /dev/null so that the interpreter's final flush does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, as a shell command cut off by its pipe ends
    except (FacecapError, OSError, UnicodeDecodeError) as exc:
        error = as_user_error(exc)
        if error is None:
            raise  # not a user mistake: a bug, whose traceback is the report
        if debug or logging.getLogger("facecap").isEnabledFor(logging.DEBUG):
            traceback.print_exc()
        # A second-level subcommand is part of the name (`facecap processor healthcheck: ...`).
        command = " ".join(filter(None, (args.command, getattr(args, "processor_action", None))))
        for line in error_lines(command, error):
            print(line, file=sys.stderr)
        return error.exit_code
    return code


def as_user_error(exc: BaseException) -> FacecapError | None:
    """The user mistake behind an exception, or None for a bug. A file the user named that is missing,
    unreadable or not text reaches here as OSError or UnicodeDecodeError from wherever it was opened."""
    if isinstance(exc, FacecapError):
        return exc
    if isinstance(exc, OSError) and exc.filename:
        return UsageError(f"{exc.filename}: {exc.strerror or exc}", "check the path and its permissions")
    if isinstance(exc, UnicodeDecodeError):
        return UsageError(f"a file is not UTF-8 text ({exc.reason} at byte {exc.start})",
                          "save it as UTF-8")
    return None


def error_lines(command: str, error: FacecapError) -> list[str]:
    """`facecap <command>: <what> — <what to do>`, one line per problem of a configuration."""
    prefix = f"facecap {command}:"
    if isinstance(error, ConfigError):
        lines = [f"{prefix} {key}: {reason}" for key, reason in error.problems] or [f"{prefix} {error}"]
    else:
        lines = [f"{prefix} {error}"]
    if error.hint:
        lines[-1] += f" — {error.hint}"
    return lines


if __name__ == "__main__":
    sys.exit(main())
