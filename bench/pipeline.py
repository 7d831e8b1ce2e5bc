"""End-to-end pipeline benchmark: contract v1 faces published into the EdgeBroker, across its TLS bridge
to the cloud broker, through the processor into the S3 server (SeaweedFS), with the FaceLogger listening
on the edge — every part a real process, as `facecap demo` runs them.

For each phase it prints the faces stored per second from the first publish to the last store, and the
capture-to-store latency p50/p99 (the processor logs each stored face's latency at DEBUG, computed from the
message's captured-at, which this script sets just before publishing), then the peak resident memory of
each component and the CPU time each part spent per stored face (which tells, on a machine where every
part shares the same cores, which part is the ceiling and what the edge and the cloud side each cost).
Phases: fixed rates (default 20/s and 100/s) and full speed (as fast as the edge broker acknowledges, with
many publishes in flight). The publisher plays the detector (its identity on the edge broker) and reaches
the broker as the components do on a device, over its Unix socket, or over TCP with --local tcp.

With --compare-seed it then runs, on the same cloud broker and S3 server, the seed-style pipeline
(bench/seed.py: an open edge broker, a QoS 0 forwarder in place of the bridge and one synchronous boto3 put
per message) at full speed, and prints both figures and their ratio.

    python bench/pipeline.py [--size 30000] [--rates 20,100] [--seconds 20] [--burst 3000] [--compare-seed]
                             [--local socket|tcp] [--outbox]

With --outbox the faces take the detector's durable path instead of a plain publish: FacePublisher
queues each face, its committer syncs it to an outbox (SQLite, WAL, synchronous=FULL, in the run's
temporary folder) and the OutboxPublisher publishes it and deletes it on its receipt. Compare the figures
with a run without it: the publisher's CPU per face grows by what the outbox costs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import psutil

from facecap.contract import FaceMetadata, OutgoingFace, build_message
from facecap.detector.publisher import FacePublisher
from facecap.devkit.demo.pipeline import PROCESSOR_USER, LocalPipeline, PipelineSettings
from facecap.devkit.servers import MosquittoServer
from facecap.mqtt import MqttClient, MqttSettings
from facecap.outbox import Outbox, OutboxPublisher
from facecap.polling import wait_until
from facecap.stats import percentile

STORED = re.compile(r"stored \S+ face-id=(\S+) capture_to_store_ms=([\d.]+)")
TIMESTAMP = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3})Z")


@dataclass
class Phase:
    name: str
    face_ids: set[str] = field(default_factory=set)
    first_publish: float = 0.0


_RANDOM_BODY: dict[int, bytes] = {}


def face_parts(size: int, frame: int) -> tuple[bytes, FaceMetadata]:
    # One random body per size, made unique by the frame number: the publisher stays cheap, so the CPU it
    # takes from the parts under test (on the same cores) is small.
    body = _RANDOM_BODY.setdefault(size, os.urandom(size))
    payload = (b"\xff\xd8\xff\xe0" + frame.to_bytes(8, "big") + body)[:size]
    meta = FaceMetadata(device_id="demo-jetson", camera_id="bench", captured_at=datetime.now(timezone.utc),
                        bbox=(100, 80, 160, 200), score=0.95, frame=frame, track_id=str(frame), detector="bench")
    return payload, meta


def face(size: int, frame: int) -> OutgoingFace:
    return build_message(*face_parts(size, frame))


class DurableSender:
    """--outbox: the detector's publisher with its outbox, on the benchmark's client."""

    def __init__(self, client: MqttClient, folder: Path, device_id: str) -> None:
        self.outbox = OutboxPublisher(Outbox(folder), client.settings, client.client_id, device_id, client=client)
        self.publisher = FacePublisher(client, topic_prefix="faces", max_payload_bytes=1_000_000,
                                       max_queued_bytes=1 << 30, outbox=self.outbox)

        self.phases: list[tuple[str, int, float]] = []  # name, faces, outbox CPU seconds at its start

    def outbox_cpu(self) -> float:
        """CPU seconds of what only the outbox does: the committer thread (insert and sync) and the client's
        dispatcher (receipts deleting faces; nothing else arrives on this client). Publishing is left out:
        the plain path does it too."""
        ours = {t.native_id for t in threading.enumerate()
                if t.name == "outbox-commit" or t.name.startswith("mqtt-dispatch-")}
        used: float = sum(t.user_time + t.system_time for t in psutil.Process().threads() if t.id in ours)
        return used

    def begin(self, name: str, count: int) -> None:
        self.phases.append((name, count, self.outbox_cpu()))

    def send(self, size: int, frame: int) -> str:
        payload, meta = face_parts(size, frame)
        assert self.publisher.submit(payload, meta)
        return meta.face_id

    def stop(self) -> None:
        ends = [cpu for _, _, cpu in self.phases[1:]] + [self.outbox_cpu()]  # while its threads still run
        self.publisher.close(60)
        print(f"\n{self.outbox.summary()}")
        for (name, count, start), end in zip(self.phases, ends, strict=True):
            print(f"outbox CPU per face, {name}: {(end - start) * 1000 / max(1, count):.2f} ms "
                  "(commit thread + receipts)")
        self.outbox.stop(30)
        self.outbox.outbox.close()


def members(pid: int) -> list[psutil.Process]:
    """A component's processes: `facecap broker` runs mosquitto and the TLS forwarder as its children."""
    process = psutil.Process(pid)
    return [process, *process.children(recursive=True)]


def cpu_seconds(pids: dict[str, int]) -> dict[str, float]:
    """User + system CPU time used so far by each part: a component with its children; this script alone
    (its children are the brokers and the S3 server, counted as parts of their own)."""
    used: dict[str, float] = {}
    for name, pid in pids.items():
        try:
            processes = [psutil.Process(pid)] if pid == os.getpid() else members(pid)
            used[name] = sum(sum(p.cpu_times()[:2]) for p in processes)
        except psutil.Error:
            used[name] = 0.0
    return used


class MemorySampler:
    """Peak resident memory of each component's processes (a component's children included), and of each
    of its processes apart (the peaks of the parts need not coincide)."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.peak: dict[str, float] = dict.fromkeys(pids, 0.0)
        self.member_peaks: dict[str, dict[str, float]] = {name: {} for name in pids}
        self._labels: dict[int, str] = {}  # pid -> command line, read once (it does not change)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self, name: str, pid: int) -> None:
        total = 0.0
        try:
            for process in members(pid):
                rss = process.memory_info().rss / 1e6
                label = self._labels.get(process.pid)
                if label is None:
                    label = self._labels[process.pid] = f"{' '.join(process.cmdline()[:3])[-40:]} ({process.pid})"
                peaks = self.member_peaks[name]
                peaks[label] = max(peaks.get(label, 0.0), rss)
                total += rss
        except psutil.Error:
            return
        self.peak[name] = max(self.peak[name], total)

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            for name, pid in self.pids.items():
                self._sample(name, pid)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def print_peaks(self) -> None:
        print("\npeak resident memory")
        for name, peak in self.peak.items():
            print(f"  {name:<44}{peak:>8.1f} MB")
            if len(self.member_peaks[name]) > 1:
                for label, member_peak in self.member_peaks[name].items():
                    print(f"    {label:<42}{member_peak:>8.1f} MB")


class StoreLog:
    """Follows the processor's log, remembering each stored face's latency (ms) and wall time; reads only
    what was appended since the last call, so polling it costs the parts under test little CPU."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.stored: dict[str, tuple[float, float]] = {}

    def update(self) -> None:
        if not self.path.exists():
            return
        with self.path.open("rb") as log:
            log.seek(self.offset)
            chunk = log.read()
        complete = chunk.rfind(b"\n") + 1  # leave a half-written line for the next call
        self.offset += complete
        for line in chunk[:complete].decode(errors="replace").splitlines():
            match = STORED.search(line)
            stamp = TIMESTAMP.match(line)
            if match and stamp:
                when = datetime.strptime(stamp.group(1), "%Y-%m-%dT%H:%M:%S.%f").replace(tzinfo=timezone.utc)
                self.stored[match.group(1)] = (float(match.group(2)), when.timestamp())

    def latencies(self, ids: set[str]) -> tuple[list[float], float]:
        """Latencies (ms) of these faces and the wall time of the last store."""
        self.update()
        found = [self.stored[face_id] for face_id in ids if face_id in self.stored]
        return [latency for latency, _ in found], max((when for _, when in found), default=0.0)


def start_publisher(client: MqttClient, outbox: Path | None) -> DurableSender | None:
    if outbox is None:
        client.start()
        return None
    durable = DurableSender(client, outbox, "demo-jetson")
    durable.outbox.start()  # starts the client
    return durable


def stop_publisher(client: MqttClient, durable: DurableSender | None) -> None:
    if durable is None:
        client.stop()
    else:
        durable.stop()


def run_phase(client: MqttClient, phase: Phase, size: int, count: int, rate: float, *,
              durable: DurableSender | None = None) -> None:
    interval = 1.0 / rate if rate else 0.0
    start = time.monotonic()
    phase.first_publish = time.time()
    if durable is not None:
        durable.begin(phase.name, count)
    futures = []
    for index in range(count):
        if interval:
            # Publish on a fixed schedule, so latency is not hidden by bursts.
            delay = start + index * interval - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        if durable is not None:
            phase.face_ids.add(durable.send(size, index))
            continue
        message = face(size, index)
        phase.face_ids.add(message.face_id)
        futures.append(client.publish(message.topic, message.payload, content_type=message.content_type,
                                      user_properties=message.user_properties, timeout=60))
    for future in futures:
        assert future is not None
        future.result(timeout=120)


EDGE_PARTS = ("publisher (this script)", "edge broker (facecap broker + mosquitto)", "face logger")


def print_cpu(cpu_per_face: dict[str, dict[str, float]]) -> None:
    """CPU ms per stored face for each part and phase, summed for the edge and the cloud side."""
    phases = list(cpu_per_face)
    parts = list(next(iter(cpu_per_face.values())))
    print("\nCPU time per stored face, ms (user + system)")
    print(f"  {'part':<44}" + "".join(f"{name:>14}" for name in phases))
    for part in parts:
        print(f"  {part:<44}" + "".join(f"{cpu_per_face[name][part]:>14.2f}" for name in phases))
    for side, chosen in (("edge side", [p for p in parts if p in EDGE_PARTS]),
                         ("cloud side", [p for p in parts if p not in EDGE_PARTS])):
        print(f"  {side + ' total':<44}" + "".join(
            f"{sum(cpu_per_face[name][p] for p in chosen):>14.2f}" for name in phases))
    full = cpu_per_face[phases[-1]]
    total = sum(full.values())
    cores = os.cpu_count() or 1
    print(f"  all parts: {total:.2f} ms per face at full speed, a ceiling of ~{cores * 1000 / total:.0f} faces/s "
          f"on {cores} shared cores")


def start_seed_part(pipeline: LocalPipeline, part: str, options: list[str],
                    env: dict[str, str]) -> subprocess.Popen[bytes]:
    """Start a part of the seed-style pipeline and wait until it is subscribed."""
    log = pipeline.logs / f"seed-{part}.log"
    with open(log, "ab") as out:
        process = subprocess.Popen([sys.executable, str(Path(__file__).with_name("seed.py")), part, *options],
                                   stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **env})
    if not wait_until(lambda: b"forwarding" in log.read_bytes() or b"subscribed to" in log.read_bytes()
                      or process.poll() is not None, 30):
        raise RuntimeError(f"seed {part} did not subscribe; see {log}")
    if process.poll() is not None:
        raise RuntimeError(f"seed {part} exited with {process.returncode}; see {log}")
    return process


def terminate(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    process.wait(30)


def compare_seed(pipeline: LocalPipeline, *, size: int, count: int, facecap_rate: float,
                 facecap_cpu: dict[str, float]) -> None:
    """The seed-style pipeline at full speed on the same cloud broker and S3 server, against facecap's
    full-speed figure."""
    pipeline.components["processor"].stop()  # the seed-style processor alone stores these faces
    device = pipeline.settings.device_id
    assert pipeline.s3 is not None and pipeline.s3.process is not None and pipeline.cloud is not None
    assert pipeline.cloud.process is not None
    with contextlib.ExitStack() as cleanup:  # undone in reverse, also when a part fails to start
        seed_edge = MosquittoServer(pipeline.workdir / "seed-edge", persistence=False).start()  # open, as the seed's
        cleanup.callback(seed_edge.stop)
        assert seed_edge.process is not None
        edge = MqttSettings(host=seed_edge.host, port=seed_edge.port)
        forwarder = start_seed_part(pipeline, "forwarder", ["--edge", json.dumps(edge.model_dump(mode="json",
                                                                                                  by_alias=True)),
                                                            "--cloud", json.dumps(pipeline.cloud_mqtt(device))], {})
        cleanup.callback(terminate, forwarder)
        processor = start_seed_part(pipeline, "processor",
                                    ["--cloud", json.dumps(pipeline.cloud_mqtt(PROCESSOR_USER)),
                                     "--store", pipeline.store_url + "-seed"], pipeline.s3.env())
        cleanup.callback(terminate, processor)
        parts = {"publisher (this script)": os.getpid(), "edge broker (open mosquitto)": seed_edge.process.pid,
                 "seed forwarder (QoS 0)": forwarder.pid, "cloud broker (mosquitto)": pipeline.cloud.process.pid,
                 "seed processor (sync boto3 put)": processor.pid, "S3 server (weed)": pipeline.s3.process.pid}
        client = MqttClient(edge, "bench-seed-publisher")
        client.start()
        cleanup.callback(client.stop)
        store_log = StoreLog(pipeline.logs / "seed-processor.log")
        phase = Phase("seed full speed")
        before = cpu_seconds(parts)
        run_phase(client, phase, size, count, 0.0)
        progress = [-1]

        def settled() -> bool:  # QoS 0 may lose faces: stop waiting once nothing moved for 15 s
            stored = len(store_log.latencies(phase.face_ids)[0])
            moved, progress[0] = stored != progress[0], stored
            return stored >= count or not moved

        while not wait_until(settled, timeout=15, interval=15):
            pass
        after = cpu_seconds(parts)
        latencies, last = store_log.latencies(phase.face_ids)
    rate = len(latencies) / (last - phase.first_publish) if last > phase.first_publish else 0.0
    print("\nseed-style pipeline (open edge broker, QoS 0 forwarder, one synchronous boto3 put per message), "
          "same cloud broker and S3 server:")
    print(f"  {count} faces published at full speed, {len(latencies)} stored, {rate:.1f} faces/s")
    print(f"  facecap {facecap_rate:.1f} faces/s / seed-style {rate:.1f} faces/s = "
          f"{facecap_rate / rate if rate else float('inf'):.2f}x")
    print("  CPU time per stored face, ms (seed-style):")
    for part in parts:
        print(f"    {part:<44}{(after[part] - before[part]) * 1000 / max(1, len(latencies)):>8.2f}")
    print(f"  facecap's processor at full speed: {facecap_cpu['processor']:.2f} ms per face")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=30_000, help="face size in bytes (default 30000)")
    parser.add_argument("--rates", default="20,100", help="fixed rates in faces/s (default 20,100)")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each fixed-rate phase")
    parser.add_argument("--burst", type=int, default=3000, help="faces in the full-speed phase")
    parser.add_argument("--workers", type=int, default=16, help="processor workers (default 16)")
    parser.add_argument("--compare-seed", action="store_true",
                        help="then run the seed-style pipeline at full speed on the same servers (bench/seed.py)")
    parser.add_argument("--local", choices=("socket", "tcp"), default="socket",
                        help="how the publisher and the logger reach the edge broker: its Unix socket, as on a "
                             "device (default), or its TCP loopback listener")
    parser.add_argument("--outbox", action="store_true",
                        help="publish through the detector's outbox path (commit, publish, delete on receipt)")
    return parser.parse_args()


def main() -> None:
    args = parse_args()

    with tempfile.TemporaryDirectory(prefix="facecap-bench-pipeline-") as folder:
        pipeline = LocalPipeline(PipelineSettings(
            workdir=Path(folder), store="s3", local=args.local,
            # The per-device ceiling (50 faces/s) would quarantine the full-speed phase: one publisher
            # plays a whole fleet here.
            processor_overrides={"logging": {"level": "DEBUG"}, "workers": args.workers,
                                 "maxFacesPerSecondPerDevice": 0}))
        try:
            pipeline.start_cloud()
            processor = pipeline.start_processor()
            broker = pipeline.start_edge_broker()
            logger = pipeline.start_logger()
            assert pipeline.cloud is not None and pipeline.cloud.process is not None
            assert processor.process and broker.process and logger.process
            pids = {"edge broker (facecap broker + mosquitto)": broker.process.pid,
                    "face logger": logger.process.pid,
                    "cloud broker (mosquitto)": pipeline.cloud.process.pid,
                    "processor": processor.process.pid}
            sampler = MemorySampler(pids)
            assert pipeline.s3 is not None and pipeline.s3.process is not None
            # CPU also counts the S3 server and this script (the publisher, with its log parsing).
            cpu_parts = {"publisher (this script)": os.getpid(), **pids, "S3 server (weed)": pipeline.s3.process.pid}
            cpu_per_face: dict[str, dict[str, float]] = {}
            store_log = StoreLog(processor.log)
            sampler.start()
            # The publisher plays the detector: its identity, over the socket or TCP as --local says.
            client = MqttClient(pipeline.edge_settings("detector", max_in_flight=256), "bench-publisher")
            durable = start_publisher(client, Path(folder) / "outbox" if args.outbox else None)
            rates = [float(r) for r in args.rates.split(",") if r]
            phases = [(f"{rate:g} faces/s", int(rate * args.seconds), rate) for rate in rates]
            phases.append(("full speed", args.burst, 0.0))
            print(f"pipeline benchmark: {args.size} B faces{' through the outbox' * args.outbox}, local hop over "
                  f"{args.local}, edge -> TLS bridge -> cloud -> processor ({args.workers} workers) -> S3 "
                  f"(SeaweedFS); {os.cpu_count()} cores\n")
            print(f"{'phase':<16}{'faces':>7}{'stored':>8}{'faces/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}")
            rates_seen: dict[str, float] = {}
            for name, count, rate in phases:
                phase = Phase(name)
                cpu_before = cpu_seconds(cpu_parts)
                run_phase(client, phase, args.size, count, rate, durable=durable)
                def all_stored(ids: set[str] = phase.face_ids) -> bool:
                    return len(store_log.latencies(ids)[0]) >= len(ids)

                done = wait_until(all_stored, timeout=180, interval=0.5)
                cpu_after = cpu_seconds(cpu_parts)
                latencies, last = store_log.latencies(phase.face_ids)
                cpu_per_face[name] = {part: (cpu_after[part] - cpu_before[part]) * 1000 / max(1, len(latencies))
                                      for part in cpu_parts}
                throughput = len(latencies) / (last - phase.first_publish) if last > phase.first_publish else 0.0
                rates_seen[name] = throughput
                print(f"{name:<16}{count:>7}{len(latencies):>8}{throughput:>10.1f}"
                      f"{statistics.median(latencies):>9.1f}{percentile(latencies, 0.99):>9.1f}"
                      f"{max(latencies):>9.1f}" + ("" if done else "   (not all stored within 180 s)"))
                time.sleep(2)
            sampler.stop()
            sampler.print_peaks()
            print_cpu(cpu_per_face)
            if args.compare_seed:
                compare_seed(pipeline, size=args.size, count=args.burst,
                             facecap_rate=rates_seen["full speed"], facecap_cpu=cpu_per_face["full speed"])
            stop_publisher(client, durable)
        finally:
            pipeline.stop_all()


if __name__ == "__main__":
    main()
