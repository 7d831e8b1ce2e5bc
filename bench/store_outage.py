"""The processor's memory while its broker reconnects during a store outage.

Each reconnect makes the cloud broker send the processor's unacknowledged faces again. While S3 is down
none of them can be stored, so what the processor holds depends on what it does with those copies: it
used to retry each copy beside the first (a receive window more per reconnect, payloads and all); it now
keeps one copy of each face with its payload (docs/processor.md, "A reconnect during a store outage").

The run:
1. a real Mosquitto (persistence on) and a real S3 server (SeaweedFS), which is then stopped;
2. the real `facecap processor` (a subprocess, default S3 client and workers) and --faces faces of
   --size bytes published to it, which it cannot store;
3. --restarts restarts of the broker, --settle seconds apart: after each, the processor's faces in hand
   (its heartbeat's `pending`) and its resident memory;
4. S3 back: how long until every face is stored and nothing is in hand, and the objects in the bucket.

    python bench/store_outage.py [--faces 500] [--size 30000] [--restarts 60] [--settle 3]
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script: `bench` is importable
from bench.processor import BUCKET, consumer_env, count_objects, make_faces, publish_all
from facecap.devkit.servers import MosquittoServer, S3Server
from facecap.polling import wait_until


def heartbeat_state(path: Path) -> dict[str, Any]:
    try:
        state: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return state


def wait_for(path: Path, check: Callable[[dict[str, Any]], object], timeout: float) -> None:
    if not wait_until(lambda: (state := heartbeat_state(path)) and check(state), timeout, 0.1):
        raise RuntimeError(f"the processor's heartbeat never showed the state waited for: {heartbeat_state(path)}")


def run(folder: Path, args: argparse.Namespace) -> None:
    broker = MosquittoServer(folder / "broker").start()
    s3 = S3Server(folder / "s3").start()
    client: Any = s3.client()
    client.create_bucket(Bucket=BUCKET)
    s3.stop()
    heartbeat = folder / "processor.heartbeat"
    env = consumer_env(broker, s3, client_id="facecap-bench-outage", prefix="outage", heartbeat=heartbeat,
                       workers=16)
    env["FACECAP_RETRY__MAX_DELAY_SECONDS"] = "5"
    log = folder / "processor.log"
    with open(log, "ab") as out:
        process = subprocess.Popen([sys.executable, "-m", "facecap.cli", "processor"], env=env, stdout=out,
                                   stderr=subprocess.STDOUT)
    watched = psutil.Process(process.pid)
    try:
        wait_for(heartbeat, lambda s: s.get("subscribed"), 60)
        publish_all(broker, "bench-outage-publisher", make_faces(args.faces, args.size))
        time.sleep(args.settle)
        print(f"{args.faces} faces of {args.size} bytes published; S3 down; the broker restarted "
              f"{args.restarts} times, {args.settle:g} s apart")
        print(f"{'restarts':>8} {'faces in hand':>14} {'processor RSS MB':>17}")
        for restart in range(args.restarts + 1):
            if restart:
                broker.restart()
                wait_for(heartbeat, lambda s: s.get("connected") and s.get("subscribed"), 60)
                time.sleep(args.settle)
            if restart % max(1, args.restarts // 6) == 0 or restart == args.restarts:
                pending = heartbeat_state(heartbeat).get("pending")
                print(f"{restart:>8} {pending!s:>14} {watched.memory_info().rss / 1e6:>17.1f}")
        s3.start()
        started = time.monotonic()
        wait_for(heartbeat, lambda s: s.get("pending") == 0 and s.get("stored", 0) >= args.faces, 600)
        drained = time.monotonic() - started
        print(f"S3 back: every face stored and none in hand after {drained:.1f} s; objects in the bucket "
              f"{count_objects(s3, 'outage')} for {args.faces} faces; processor RSS "
              f"{watched.memory_info().rss / 1e6:.1f} MB")
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(60)
        s3.stop()
        broker.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--faces", type=int, default=500)
    parser.add_argument("--size", type=int, default=30_000)
    parser.add_argument("--restarts", type=int, default=60)
    parser.add_argument("--settle", type=float, default=3.0)
    args = parser.parse_args()
    print(f"# bench/store_outage.py, {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC")
    with tempfile.TemporaryDirectory() as tmp:
        run(Path(tmp), args)


if __name__ == "__main__":
    main()
