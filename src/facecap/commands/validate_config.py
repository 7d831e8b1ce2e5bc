"""`facecap validate-config COMPONENT CONFIG`: check a configuration before deploying it."""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from ..config import COMPONENT_MODELS, component_model, load_config


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "validate-config",
        help="check a component configuration and print it with every default filled in",
        description="Validate CONFIG (a JSON string or file) for COMPONENT. Exits 0 and prints the effective "
        "configuration (secrets masked) when it is valid, or exits 2 naming each bad key.",
    )
    parser.add_argument("component", metavar="COMPONENT",
                        help="component name: " + (", ".join(sorted(COMPONENT_MODELS)) or "(none registered)"))
    parser.add_argument("config", metavar="CONFIG", help="JSON string or path of a JSON file")
    parser.add_argument("--with-env", action="store_true",
                        help="also apply FACECAP_* environment variables, as the component would")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    model = component_model(args.component)
    config = load_config(model, args.component, args.config, env=os.environ if args.with_env else {})
    print(json.dumps(config.model_dump(mode="json", by_alias=True), indent=2))
    return 0
