"""Adding one subcommand to the `facecap` parser, the same way for every command module."""

from __future__ import annotations

import argparse
import inspect
from collections.abc import Callable
from typing import Any


def add_command(subparsers: Any, name: str, run: Callable[[argparse.Namespace], int], *,
                help: str) -> argparse.ArgumentParser:
    """The parser of `facecap NAME`, which runs `run(args)`: `help` is its line in `facecap --help`, and the
    docstring of `run` the text of `facecap NAME --help` (written for the user, next to what it describes)."""
    # Under `python -OO` docstrings are gone; the one-line help still says what the command does.
    description = inspect.cleandoc(run.__doc__) if run.__doc__ else help
    parser: argparse.ArgumentParser = subparsers.add_parser(name, help=help, description=description)
    parser.set_defaults(func=run)
    return parser
