"""What the EdgeBroker writes to the device's flash while the uplink is down.

A Jetson's eMMC or SD card wears with every byte written. While the uplink is down the detector's outbox
keeps its faces on disk and lets at most `outbox.maxUnconfirmed` (256) of them wait in the EdgeBroker's
queue, which then does not change. Mosquitto keeps that queue in memory and saves the whole store to
mosquitto.db: on a clock (`autosave_interval` seconds) it rewrites it at every interval whether anything
changed or not; after N changes (`autosave_on_changes`, facecap's default since 2026-11-27) it writes it as it
fills and then not again.

The script runs the real EdgeBroker (`facecap broker`) with its bridge pointed at a closed port, puts
--faces faces of --size bytes in its queue, then counts what Mosquitto writes (/proc/<pid>/io write_bytes)
over --seconds with nothing changing: once with a clock of --interval seconds, once after --changes
changes. It prints the MB written and what each mode would write in a day: the clock at facecap's former
default of 60 s, the changes as measured.

    python bench/flash_writes.py [--faces 256] [--size 30000] [--seconds 30] [--interval 5] [--changes 100]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script: `tests` is importable
from tests.support.edgebroker import EdgeBroker
from tests.support.helpers import publish_all, sample_face

from facecap.devkit.servers import LOOPBACK, free_port
from facecap.mqtt import MqttClient

DAY_SECONDS = 86400
FORMER_INTERVAL_SECONDS = 60
STATS_CHANGES_A_MINUTE = 4


def written_by(pid: int) -> int:
    fields = dict(line.split(": ") for line in Path(f"/proc/{pid}/io").read_text().splitlines())
    return int(fields["write_bytes"])


def idle_writes(folder: Path, persistence: dict[str, int], faces: int, size: int, seconds: float) -> tuple[int, int]:
    """(bytes Mosquitto wrote while its queue did not change, size of mosquitto.db then)."""
    dead_bridge = {"host": LOOPBACK, "port": free_port(), "tls": False, "restartBaseSeconds": 1,
                   "restartCapSeconds": 2}
    edge = EdgeBroker(folder, dead_bridge, extra={"persistence": persistence}).start()
    try:
        client = MqttClient(edge.settings("detector"), "bench-detector")
        client.start()
        publish_all(client, [sample_face(device=edge.device_id, size=size, frame=i) for i in range(faces)])
        client.stop()
        assert edge.process is not None
        mosquitto = psutil.Process(edge.process.pid).children()[0].pid
        time.sleep(2)  # a save the last faces started is not the idle queue's
        before = written_by(mosquitto)
        time.sleep(seconds)
        return written_by(mosquitto) - before, (folder / "mosquitto.db").stat().st_size
    finally:
        edge.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--faces", type=int, default=256, help="faces waiting in the queue (the outbox's window)")
    parser.add_argument("--size", type=int, default=30_000)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--interval", type=int, default=5, help="the clock's autosave interval for this run")
    parser.add_argument("--changes", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        print(f"{args.faces} faces of {args.size} bytes waiting for a dead uplink; {args.seconds:g} s with "
              "nothing changing:")
        clock, size = idle_writes(Path(tmp) / "clock", {"autosaveAfterChanges": 0,
                                                        "autosaveIntervalSeconds": args.interval},
                                  args.faces, args.size, args.seconds)
        per_save = clock / max(1, round(args.seconds / (args.interval + 1)))  # Mosquitto saves once `>` interval
        print(f"  clock, every {args.interval} s:       {clock / 1e6:8.1f} MB written (mosquitto.db "
              f"{size / 1e6:.1f} MB, about {per_save / 1e6:.1f} MB a save)")
        changes, _ = idle_writes(Path(tmp) / "changes", {"autosaveAfterChanges": args.changes},
                                 args.faces, args.size, args.seconds)
        print(f"  after {args.changes} changes:          {changes / 1e6:8.1f} MB written")
        per_day = per_save * DAY_SECONDS / (FORMER_INTERVAL_SECONDS + 1)
        # On a device the store still changes a little: the detector's and the logger's stats, retained,
        # once a minute each, and each also queued for the bridge.
        saves_a_day = STATS_CHANGES_A_MINUTE * 60 * 24 / args.changes
        print(f"a day of such an outage: on a clock of {FORMER_INTERVAL_SECONDS} s {per_day / 1e9:.1f} GB; after "
              f"{args.changes} changes {changes * DAY_SECONDS / args.seconds / 1e9:.1f} GB as measured, "
              f"{saves_a_day * per_save / 1e9:.2f} GB with the components' stats ({STATS_CHANGES_A_MINUTE} "
              f"changes a minute: a save every {args.changes / STATS_CHANGES_A_MINUTE:.0f} minutes)")


if __name__ == "__main__":
    main()
