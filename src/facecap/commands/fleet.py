"""`facecap fleet`: every device's health as the cloud broker sees it (last seen, component status, bridge
state, latest counters). Exits 1 when a device is stale or faulty, so a cron job can alarm on it."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from .subcommand import add_command


def register(subparsers: Any) -> None:
    parser = add_command(subparsers, "fleet", run,
                         help="list every device's health from the cloud broker; exit 1 when one is stale or faulty")
    parser.add_argument("--config", help="the processor's configuration: JSON object or file (default: "
                                         "$FACECAP_CONFIG); FACECAP_* variables override single keys")
    parser.add_argument("--stale-after", type=float, default=300.0, metavar="SECONDS",
                        help="a device whose newest stats are older than this is stale (default 300: five "
                             "missed rounds of the detector's default 60 s stats)")
    parser.add_argument("--wait", type=float, default=10.0, metavar="SECONDS",
                        help="longest time to gather the retained messages (default 10)")
    parser.add_argument("--json", action="store_true", help="one JSON document instead of the table")
    parser.add_argument("--forget", action="append", default=[], metavar="DEVICE_ID[/COMPONENT]",
                        help="clear the retained health of a device you removed (cloud/scripts/remove-device.sh), "
                             "or of one component you took out of its deployment, so it no longer shows as stale "
                             "or offline; repeatable")


def _forget(settings: Any, view: Any, targets: list[str], forget: Any) -> int:
    """--forget DEVICE (a removed device) or DEVICE/COMPONENT (a component taken out of its deployment)."""
    from ..errors import MqttError

    wanted = [(target.partition("/")[0], target.partition("/")[2] or None) for target in targets]
    unknown = [target for target, (device, component) in zip(targets, wanted, strict=True)
               if device not in view.devices or (component and component not in view.devices[device].components)]
    if unknown:
        print(f"facecap fleet: no health of {', '.join(unknown)} on the broker (nothing forgotten)", file=sys.stderr)
        return 2
    for target, (device, component) in zip(targets, wanted, strict=True):
        try:
            topics = forget(settings, view.devices[device], component)
        except MqttError as exc:
            print(f"facecap fleet: cannot clear the health of {target}: {exc} (the processor listener's ACL must "
                  "let the processor write facecap/+/+/status, facecap/+/+/stats and "
                  "$SYS/broker/connection/+/state: cloud/mosquitto/processor.acl)", file=sys.stderr)
            return 2
        print(f"forgot {target}: {len(topics)} retained messages cleared")
    return 0


def run(args: argparse.Namespace) -> int:
    """Read the retained status and stats topics that each device's components keep on the cloud broker
    (carried by the edge bridge) and the bridges' connection state, with the processor's credentials
    (--config: the processor's configuration). Exit 0 when every device sent stats within --stale-after
    seconds and none has a component offline or silent, 1 otherwise, 2 on a bad configuration or no
    connection."""
    from ..config import config_source, load_config
    from ..errors import MqttError
    from ..processor.config import ProcessorConfig
    from ..processor.fleet import collect, forget, render_table, utc_now

    config = load_config(ProcessorConfig, "processor", config_source(args.config))
    try:
        view = collect(config.mqtt, timeout=args.wait)
    except MqttError as exc:
        print(f"facecap fleet: cannot read the cloud broker at {config.mqtt.describe()}: {exc}", file=sys.stderr)
        return 2
    if args.forget:
        return _forget(config.mqtt, view, args.forget, forget)
    devices, now = view.snapshot(), utc_now()
    if args.json:
        print(json.dumps([d.as_dict(now, args.stale_after) for d in devices], indent=2))
    else:
        print(render_table(devices, now, args.stale_after))
    return 0 if all(d.healthy(now, args.stale_after) for d in devices) else 1
