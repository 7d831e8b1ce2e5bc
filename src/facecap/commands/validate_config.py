"""`facecap validate-config COMPONENT CONFIG`: check a configuration before deploying it."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from ..config import COMPONENT_MODELS, ConfigModel, component_model, load_config
from ..errors import ConfigError
from ..logs import hide_credentials
from ..validation import check, errors
from .subcommand import add_command


def register(subparsers: Any) -> None:
    parser = add_command(subparsers, "validate-config", run,
                         help="check a component configuration and print it with every default filled in")
    parser.add_argument("component", metavar="COMPONENT",
                        help="component name: " + (", ".join(sorted(COMPONENT_MODELS)) or "(none registered)"))
    parser.add_argument("config", metavar="CONFIG", help="JSON string or path of a JSON file")
    parser.add_argument("--with-env", action="store_true",
                        help="also apply FACECAP_* environment variables, as the component would")
    parser.add_argument("--strict", action="store_true",
                        help="a file that must exist and does not is an error (run it on the device itself)")


def run(args: argparse.Namespace) -> int:
    """Validate CONFIG (a JSON string or file) for COMPONENT. Exits 0 and prints the effective configuration
    (secrets masked) when it is valid, or exits 2 naming each bad key. It runs the checks the component runs
    at start that need no network; files the component needs (passwords, certificates, the model) are
    warnings here, since they live on the device, unless --strict."""
    env = os.environ if args.with_env else {}
    problems = check(args.component, args.config, args.strict, env=env, option="CONFIG")
    if errors(problems):
        raise ConfigError(args.component, [(p.key, p.reason) for p in errors(problems)],
                          hint="the component would refuse this configuration: fix it")
    for problem in problems:
        after = (" — the component will refuse to start unless the file is there and usable on its machine "
                 "(--strict makes this an error)") if problem.about_file else ""
        print(f"facecap validate-config: {problem.line()}{after}", file=sys.stderr)
    config = load_config(component_model(args.component), args.component, args.config, env=env, option="CONFIG")
    print(json.dumps(shown(config), indent=2))
    return 0


def shown(config: ConfigModel) -> dict[str, Any]:
    """The configuration as printed: secret keys as ***, credentials in any text (a camera's RTSP URL or
    pipeline) hidden."""
    data = config.model_dump(mode="json", by_alias=True)
    for key in type(config).secret_keys:
        if data.get(key):
            data[key] = "***"
    return _without_credentials(data)  # type: ignore[no-any-return]


def _without_credentials(value: Any) -> Any:
    if isinstance(value, str):
        return hide_credentials(value)
    if isinstance(value, dict):
        return {key: _without_credentials(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_without_credentials(item) for item in value]
    return value
