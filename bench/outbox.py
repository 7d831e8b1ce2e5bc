"""The outbox's cost per face: what committing each face to disk (SQLite, WAL, synchronous=FULL) before
publishing it adds, and what receipts cost to apply.

Three measurements, each over --faces faces of --size bytes:

- capture: `Outbox.capture`, one face per synced transaction (the detector's path: each face is on disk
  before it is published) and --batch faces per transaction (`facecap send --outbox`);
- receipts: `Outbox.delivered` for receipts of 100 face ids each, as the processor batches them;
- publish: the same faces into a real Mosquitto at full speed, once with the plain MQTT client and once
  through `OutboxPublisher` (commit, then publish with many in flight), to the last PUBACK;
- disk writes: what the whole life of a face in the outbox (its commit, the receipt that deletes it, the
  checkpoint that folds the WAL back) writes to the disk, as this process's `write_bytes` and as the
  disk's own count of sectors written (which adds the file system's journal, and whatever else wrote to
  that disk meanwhile). A Jetson's eMMC or SD card wears with what is written to it;
- with --backlog N: the bridge coming back over N overdue faces. Holding them back for one more
  redeliverAfterSeconds is a note in the publisher's memory (`BridgeUpHold`); it used to be a rewrite of every
  overdue row, which the comparison line runs as the same SQL, for the time and the WAL bytes it cost.

CPU is this process's user + system time (every thread), wall time is the elapsed time. The outbox lives in
--dir (default: a temporary folder), since the sync cost is the disk's.

    python bench/outbox.py [--faces 2000] [--size 20000] [--batch 32] [--backlog 0] [--dir PATH]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

from facecap.contract import FaceMetadata, OutgoingFace, build_message
from facecap.devkit.servers import MosquittoServer
from facecap.mqtt import MqttClient, MqttSettings
from facecap.outbox import Outbox, OutboxPublisher, OutboxSettings
from facecap.outbox.flow import BridgeUpHold


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def make_faces(count: int, size: int) -> list[OutgoingFace]:
    body = b"\xff\xd8\xff\xe0" + bytes(range(256)) * (size // 256 + 1)
    return [build_message(body[:size - 8] + index.to_bytes(8, "big"), FaceMetadata(
        device_id="bench-jetson", camera_id="cam0", captured_at=datetime.now(timezone.utc), bbox=(1, 2, 64, 80),
        score=0.9, frame=index, track_id=str(index), detector="yunet")) for index in range(count)]


def measure(label: str, count: int, work: Callable[[], None]) -> None:
    cpu, wall = cpu_seconds(), time.perf_counter()
    work()
    cpu, wall = cpu_seconds() - cpu, time.perf_counter() - wall
    print(f"{label:<48} {count / wall:8.0f} faces/s  {1000 * wall / count:6.3f} ms wall  "
          f"{1000 * cpu / count:6.3f} ms CPU per face")


def bench_capture(folder: Path, faces: list[OutgoingFace], batch: int) -> None:
    latencies: list[float] = []

    def one_by_one() -> None:
        outbox = Outbox(folder / "single")
        for face in faces:
            started = time.perf_counter()
            outbox.capture([face])
            latencies.append(time.perf_counter() - started)
        outbox.close()

    def batched() -> None:
        outbox = Outbox(folder / "batched")
        for start in range(0, len(faces), batch):
            outbox.capture(faces[start:start + batch])
        outbox.close()

    measure("capture, one face per synced commit", len(faces), one_by_one)
    latencies.sort()
    print(f"{'':<48} commit latency p50 {1000 * statistics.median(latencies):.2f} ms, "
          f"p99 {1000 * latencies[int(0.99 * (len(latencies) - 1))]:.2f} ms")
    measure(f"capture, {batch} faces per synced commit", len(faces), batched)
    outbox = Outbox(folder / "batched")
    ids = [face.face_id for face in faces]

    def receipts() -> None:
        for start in range(0, len(ids), 100):
            outbox.delivered(ids[start:start + 100])

    measure("receipts of 100 ids (delete, synced)", len(faces), receipts)
    outbox.close()


def written_by(pid: int | str = "self") -> int:
    """Bytes the process has had written to storage (/proc/<pid>/io write_bytes)."""
    fields = dict(line.split(": ") for line in Path(f"/proc/{pid}/io").read_text().splitlines())
    return int(fields["write_bytes"])


class DiskWrites:
    """Bytes written since it was made: this process's (/proc/self/io) and the disk's under `folder`
    (/sys/dev/block/<device>/stat, sectors written; None where the folder is on no block device)."""

    def __init__(self, folder: Path) -> None:
        device = folder.stat().st_dev
        self._disk_stat = Path(f"/sys/dev/block/{os.major(device)}:{os.minor(device)}/stat")
        self._start = self._now()

    def _now(self) -> tuple[int, int | None]:
        sectors = int(self._disk_stat.read_text().split()[6]) if self._disk_stat.exists() else None
        return written_by(), None if sectors is None else sectors * 512

    def since(self) -> tuple[int, int | None]:
        process, disk = self._now()
        return process - self._start[0], None if disk is None or self._start[1] is None else disk - self._start[1]


def bench_disk_writes(folder: Path, faces: list[OutgoingFace], batch: int) -> None:
    size = len(faces[0].payload)
    print(f"disk writes over the life of a face in the outbox (commit, receipt, checkpoint), {size} B faces:")
    for label, per_commit, per_receipt in (("one face a commit, one id a receipt (a few faces/s)", 1, 1),
                                           ("one face a commit, receipts of 10 ids", 1, 10),
                                           (f"{batch} faces a commit, receipts of 100 ids (a burst)", batch, 100)):
        outbox = Outbox(folder / f"disk-{per_commit}-{per_receipt}")
        os.sync()  # what earlier steps left in the page cache is not this measurement's
        writes = DiskWrites(folder)
        for start in range(0, len(faces), per_commit):
            outbox.capture(faces[start:start + per_commit])
        ids = [face.face_id for face in faces]
        for start in range(0, len(ids), per_receipt):
            outbox.delivered(ids[start:start + per_receipt])
        outbox._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        outbox.close()
        os.sync()
        process, disk = writes.since()
        on_disk = "n/a" if disk is None else f"{disk / len(faces) / 1024:6.1f} KB ({disk / len(faces) / size:4.1f} x)"
        print(f"  {label:<58} process {process / len(faces) / 1024:6.1f} KB ({process / len(faces) / size:4.1f} x)"
              f"  disk {on_disk} per face")


def bench_publish(folder: Path, faces: list[OutgoingFace]) -> None:
    broker = MosquittoServer(folder / "broker", persistence=False).start()
    settings = MqttSettings(host=broker.host, port=broker.port, max_in_flight=256)
    try:
        client = MqttClient(settings, "bench-plain")
        client.start()

        def plain() -> None:
            for face in faces:
                client.publish(face.topic, face.payload, content_type=face.content_type,
                               user_properties=face.user_properties)
            client.flush(120)

        measure("publish, plain client (to the last PUBACK)", len(faces), plain)
        client.stop()
        outbox = Outbox(folder / "publisher")
        publisher = OutboxPublisher(outbox, settings, "bench-outbox", "bench-jetson")
        publisher.start()
        publisher.wait_subscribed(10)

        def durable() -> None:
            for face in faces:
                publisher.capture([face])
            while publisher.stats.published < len(faces):
                time.sleep(0.005)

        measure("publish through the outbox, one commit a face", len(faces), durable)
        publisher.stop()
        outbox.close()
    finally:
        broker.stop()


def bench_backlog(folder: Path, count: int, size: int) -> None:
    outbox = Outbox(folder / "backlog", OutboxSettings(max_faces=count + 1, max_bytes=(count + 1) * (size + 4096)))
    for start in range(0, count, 500):
        outbox.capture(make_faces(min(500, count - start), size))
    wal = outbox.path.with_name(outbox.path.name + "-wal")

    def timed(label: str, work: Callable[[], None]) -> None:
        outbox._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        before, started = wal.stat().st_size, time.perf_counter()
        work()
        print(f"{label:<48} {1000 * (time.perf_counter() - started):8.1f} ms  "
              f"{(wal.stat().st_size - before) / 1e6:7.1f} MB written to the WAL")

    print(f"bridge back over {count} overdue faces:")
    timed("  hold in memory (BridgeUpHold)", lambda: BridgeUpHold(60).begin())

    def rewrite() -> None:  # what the hold did before: a new schedule on every overdue row
        with outbox._conn:
            outbox._conn.execute("UPDATE faces SET next_attempt = ? WHERE next_attempt < ? AND next_attempt > 0",
                                 (time.time() + 60, time.time() + 60))

    timed("  rewrite of every overdue row (the old way)", rewrite)
    outbox.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--faces", type=int, default=2000)
    parser.add_argument("--size", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--backlog", type=int, default=0, help="also time the bridge coming back over this many "
                        "overdue faces")
    parser.add_argument("--dir", type=Path, default=None)
    args = parser.parse_args()
    faces = make_faces(args.faces, args.size)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        folder = Path(tmp)
        print(f"{args.faces} faces of {args.size} bytes, outbox in {folder}")
        bench_capture(folder, faces, args.batch)
        bench_disk_writes(folder, faces, args.batch)
        bench_publish(folder, faces)
        if args.backlog:
            bench_backlog(folder, args.backlog, args.size)


if __name__ == "__main__":
    main()
