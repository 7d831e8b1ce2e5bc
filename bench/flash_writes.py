"""What the EdgeBroker writes to the device's flash while the uplink is down, or slow.

A Jetson's eMMC or SD card wears with every byte written. While the uplink is down the detector's outbox
keeps its faces on disk and lets at most `outbox.maxUnconfirmed` (256) of them wait in the EdgeBroker's
queue. Mosquitto keeps that queue in memory and saves the whole store to mosquitto.db: on a clock
(`persistence.autosaveIntervalSeconds`) it rewrites it at every interval whether anything changed or not;
after N changes (`persistence.autosaveAfterChanges`) it writes it only as it changes, but every face that
flows counts as two or three changes (queued, acknowledged by the cloud, by the logger).

Two scenarios, each with the real EdgeBroker (`facecap broker`) and --faces faces of --size bytes waiting in
its queue, counting what Mosquitto writes (/proc/<pid>/io write_bytes) over --seconds:

- idle: the bridge points at a closed port and nothing changes;
- slow: the bridge reaches a cloud Mosquitto through a relay limited to --kbps kbit/s, and a new face is
  published for each one the cloud receives, as the outbox does, so the queue stays full and moves.

Each runs on a clock of --interval seconds, which shows what one save writes (the whole store, changed or
not), and after --changes changes. A day is then: on a clock of T seconds, MB a save x 86400 / (T + 1)
(Mosquitto saves once more than T seconds have passed), shown for 60 s (facecap's default before
2026-11-27) and 300 s (the default since); after N changes, the saves counted in the run, scaled.

    python bench/flash_writes.py [--faces 256] [--size 30000] [--seconds 60] [--interval 5] [--kbps 512]
                                 [--changes 100]
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script: `bench`, `tests` importable
from tests.support.edgebroker import EdgeBroker
from tests.support.helpers import Collector, publish_all, sample_face, settings_for

from bench.bridge import mosquitto_child
from bench.outbox import written_by
from facecap.devkit.link import TcpProxy
from facecap.devkit.servers import LOOPBACK, MosquittoServer, free_port
from facecap.mqtt import MqttClient

DAY_SECONDS = 86400
CLOCKS = {"60 s (the default before)": 60, "300 s (the default)": 300}
SAVED = "Saving in-memory database"


@contextlib.contextmanager
def edge_broker(folder: Path, bridge: dict[str, object], persistence: dict[str, int]) -> Iterator[EdgeBroker]:
    edge = EdgeBroker(folder, {"tls": False, "restartBaseSeconds": 1, "restartCapSeconds": 2, **bridge},
                      extra={"persistence": persistence}).start()
    try:
        yield edge
    finally:
        edge.stop()


def mosquitto_pid(edge: EdgeBroker) -> int:
    assert edge.process is not None
    return int(mosquitto_child(edge.process).pid)


def idle(folder: Path, persistence: dict[str, int], args: argparse.Namespace) -> tuple[float, int]:
    """(MB Mosquitto wrote, saves) in --seconds while its queue, --faces for a dead uplink, did not change."""
    with edge_broker(folder, {"host": LOOPBACK, "port": free_port()}, persistence) as edge:
        client = MqttClient(edge.settings("detector"), "bench-detector")
        client.start()
        publish_all(client, [sample_face(device=edge.device_id, size=args.size, frame=i) for i in range(args.faces)])
        client.stop()
        time.sleep(2)  # a save the last faces started is not the idle queue's
        pid = mosquitto_pid(edge)
        before, saves = written_by(pid), edge.log_text().count(SAVED)
        time.sleep(args.seconds)
        return (written_by(pid) - before) / 1e6, edge.log_text().count(SAVED) - saves


def slow(folder: Path, persistence: dict[str, int], args: argparse.Namespace) -> tuple[float, int, int]:
    """(MB Mosquitto wrote, saves, faces the cloud received) in --seconds with the queue full and moving over
    an uplink of --kbps: one new face for each one delivered, as the outbox keeps its window."""
    cloud = MosquittoServer(folder / "cloud", persistence=False).start()
    relay = TcpProxy(cloud.port, upstream_bytes_per_second=args.kbps * 1000 / 8)
    received = Collector()
    reader = MqttClient(settings_for(cloud), "bench-cloud-reader", on_message=received)
    try:
        reader.start()
        reader.subscribe("faces/#")
        with edge_broker(folder / "edge", {"host": LOOPBACK, "port": relay.port}, persistence) as edge:
            client = MqttClient(edge.settings("detector"), "bench-detector")
            client.start()
            published = 0
            pid = mosquitto_pid(edge)
            before, started, counted = written_by(pid), time.monotonic(), len(received.messages)
            saves = edge.log_text().count(SAVED)
            while time.monotonic() - started < args.seconds:
                keep_waiting = args.faces + len(received.messages)  # --faces published and not yet delivered
                for frame in range(published, keep_waiting):
                    client.publish(f"faces/{edge.device_id}/cam0",
                                   sample_face(device=edge.device_id, size=args.size, frame=frame).payload)
                published = max(published, keep_waiting)
                time.sleep(0.2)
            written, saves = (written_by(pid) - before) / 1e6, edge.log_text().count(SAVED) - saves
            delivered = len(received.messages) - counted
            client.stop(timeout=1)
            return written, saves, delivered
    finally:
        reader.stop(timeout=1)
        relay.close()
        cloud.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--faces", type=int, default=256, help="faces waiting in the queue (the outbox's window)")
    parser.add_argument("--size", type=int, default=30_000)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--interval", type=int, default=5, help="the clock of the runs, seconds")
    parser.add_argument("--kbps", type=float, default=512.0, help="the slow uplink's rate, kbit/s")
    parser.add_argument("--changes", type=int, default=100)
    args = parser.parse_args()
    print(f"{args.faces} faces of {args.size} bytes in the EdgeBroker's queue, {args.seconds:g} s a run; slow: "
          f"an uplink of {args.kbps:g} kbit/s")
    day = {name: DAY_SECONDS / (seconds + 1) for name, seconds in CLOCKS.items()}
    with tempfile.TemporaryDirectory() as tmp:
        for scenario in ("idle", "slow"):
            clock = {"autosaveIntervalSeconds": args.interval}
            changes = {"autosaveAfterChanges": args.changes}
            if scenario == "idle":
                (clock_mb, clock_saves), (changes_mb, changes_saves) = (
                    idle(Path(tmp) / f"idle-{name}", persistence, args)
                    for name, persistence in (("clock", clock), ("changes", changes)))
                flow = ""
            else:
                (clock_mb, clock_saves, _), (changes_mb, changes_saves, delivered) = (
                    slow(Path(tmp) / f"slow-{name}", persistence, args)
                    for name, persistence in (("clock", clock), ("changes", changes)))
                flow = f", {delivered / args.seconds:.1f} faces/s delivered"
            per_save = clock_mb / max(1, clock_saves)
            print(f"{scenario}: clock of {args.interval} s {clock_saves} saves, {clock_mb:.1f} MB ({per_save:.1f} MB "
                  f"a save); after {args.changes} changes {changes_saves} saves, {changes_mb:.1f} MB{flow}")
            print("  GB a day: " + ", ".join(f"clock {name} {per_save * saves / 1000:.1f}"
                                             for name, saves in day.items())
                  + f", after {args.changes} changes {changes_mb * DAY_SECONDS / args.seconds / 1000:.1f}")


if __name__ == "__main__":
    main()
