"""Adding one subcommand to the `facecap` parser, the same way for every command module."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any


def add_command(subparsers: Any, name: str, run: Callable[[argparse.Namespace], int], *, help: str,
                description: str) -> argparse.ArgumentParser:
    """The parser of `facecap NAME`, which runs `run(args)`: `help` is its line in `facecap --help`,
    `description` the text of `facecap NAME --help`."""
    parser: argparse.ArgumentParser = subparsers.add_parser(name, help=help, description=description)
    parser.set_defaults(func=run)
    return parser
