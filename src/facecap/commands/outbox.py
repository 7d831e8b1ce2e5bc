"""`facecap outbox status|list DIR`: what is waiting on a device for the cloud's receipt."""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic.alias_generators import to_camel

from ..outbox.inspect import OutboxReadError, read_pending, read_status
from .subcommand import add_command


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "outbox", help="show the faces an outbox still holds",
        description="Read a producer's outbox (the detector's work folder, or `facecap send --outbox DIR`) "
        "without disturbing it: safe while the producer runs.")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    status = add_command(actions, "status", _reporting(run_status),
                         help="pending count and bytes, oldest pending, delivered and evicted totals")
    listing = add_command(actions, "list", _reporting(run_list),
                          help="one line per pending face: id, captured-at, attempts")
    for sub in (status, listing):
        sub.add_argument("dir", type=Path, metavar="DIR", help="the outbox folder (or its outbox.db)")
        sub.add_argument("--json", action="store_true", help="JSON instead of text (list: one object a line)")


def _reporting(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    @functools.wraps(func)  # keeps the docstring, the action's --help text
    def run(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except OutboxReadError as exc:
            print(f"facecap outbox: {exc}", file=sys.stderr)
            return 2
    return run


def run_status(args: argparse.Namespace) -> int:
    """Print how many faces the outbox holds and their bytes, when the oldest was captured and how long it has
    waited, and how many faces it has delivered, evicted (the oldest, to make room when full) and refused (a
    new one, when full) in all. Safe while the producer runs."""
    status = read_status(args.dir)
    if args.json:
        print(json.dumps({to_camel(k): v for k, v in dataclasses.asdict(status).items()}))
        return 0
    age = "-" if status.oldest_age_seconds is None else f"{status.oldest_age_seconds:.0f} s"
    print(f"outbox     {status.path}\n"
          f"pending    {status.pending} faces, {status.pending_bytes} bytes\n"
          f"oldest     {status.oldest_captured_at or '-'} (waiting {age})\n"
          f"delivered  {status.delivered}\n"
          f"evicted    {status.evicted}\n"
          f"refused    {status.refused}")
    return 0


def run_list(args: argparse.Namespace) -> int:
    """Print one line per face still waiting for its receipt, oldest first: its face id, when it was captured
    and how many times it was published. Safe while the producer runs."""
    out = sys.stdout
    for entry in read_pending(args.dir):
        if args.json:
            out.write(json.dumps({"faceId": entry.face_id, "capturedAt": entry.captured_at,
                                  "attempts": entry.attempts}) + "\n")
        else:
            out.write(f"{entry.face_id} {entry.captured_at} {entry.attempts}\n")
    return 0
