"""Recovery after uplink cuts: how soon faces flow again once a cut link is back.

The EdgeBroker (`facecap broker`, TLS by facecap, its default bridge settings) bridges over the uplink of
a network namespace to a cloud Mosquitto inside it; a subscriber reads the faces over a second link that
stays up; a publisher sends faces at a steady rate all along (tests/uplinkrig.py). A cut takes the
namespace's side of the uplink down: no RST and no ICMP reach the edge, as when a modem loses its carrier.

First the link stays healthy for --healthy-seconds, to count reconnects that should not happen (flapping).
Then each cut lasts --cut-seconds, and after the restore the script waits for the first face to arrive:
that time is printed per cut, then the p50 and the maximum, and whether any face was lost.
Needs root and `ip netns`.

    python bench/recovery.py [--cuts 5] [--cut-seconds 60] [--healthy-seconds 30] [--rate 10] [--size 20000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script: `tests` is importable
from tests.support.netns import netns_problem
from tests.support.uplinkrig import UplinkRig

from facecap.broker.config import BridgeSettings


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cuts", type=int, default=5, help="number of cuts (default 5)")
    parser.add_argument("--cut-seconds", type=float, default=60.0, help="length of each cut (default 60)")
    parser.add_argument("--healthy-seconds", type=float, default=30.0,
                        help="healthy link before the first cut, to count flapping (default 30)")
    parser.add_argument("--between-seconds", type=float, default=15.0,
                        help="healthy link after each recovery before the next cut (default 15)")
    parser.add_argument("--rate", type=float, default=10.0, help="faces published per second (default 10)")
    parser.add_argument("--size", type=int, default=20_000, help="face size in bytes (default 20000)")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    problem = netns_problem()
    if problem is not None:
        print(f"cannot run: {problem}", file=sys.stderr)
        return 2
    defaults = BridgeSettings()
    print(f"uplink cuts without RST: {args.cuts} x {args.cut_seconds:g} s, {args.rate:g} faces/s of "
          f"{args.size} B; bridge deadLinkSeconds {defaults.dead_link_seconds}, keepAliveSeconds "
          f"{defaults.keep_alive_seconds}, restart backoff "
          f"{defaults.restart_base_seconds}-{defaults.restart_cap_seconds} s (the defaults)")
    recoveries: list[float] = []
    with tempfile.TemporaryDirectory(prefix="facecap-bench-recovery-") as folder, \
            UplinkRig(Path(folder), rate=args.rate, size=args.size) as rig:
        assert rig.edge is not None
        attempts = rig.bridge_attempts()
        time.sleep(args.healthy_seconds)
        flaps = rig.bridge_attempts() - attempts
        print(f"healthy link for {args.healthy_seconds:g} s: {flaps} reconnects")
        for number in range(1, args.cuts + 1):
            rig.cut()
            time.sleep(args.cut_seconds)
            restored = rig.restore()
            resumed = rig.first_arrival_after(restored, timeout=max(120.0, args.cut_seconds * 2))
            if resumed is None:
                print(f"cut {number}: no face within {max(120.0, args.cut_seconds * 2):g} s of the restore")
                print(rig.edge.log_tail())
                return 1
            recoveries.append(resumed)
            print(f"cut {number}: link down {args.cut_seconds:g} s; faces flowed again {resumed:.1f} s after "
                  f"the link came back", flush=True)
            time.sleep(args.between_seconds)
        lost = rig.missing(timeout=60)
        print(f"recovery after the link came back: p50 {statistics.median(recoveries):.1f} s, "
              f"max {max(recoveries):.1f} s over {len(recoveries)} cuts")
        print(f"{len(rig.published)} faces published, {len(lost)} lost; "
              f"{rig.bridge_attempts() - attempts} bridge connection attempts in all")
    return 0 if not lost else 1


if __name__ == "__main__":
    sys.exit(main())
