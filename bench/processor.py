"""Processor throughput: stored faces/s for 30 KB faces into a real S3 server (SeaweedFS `weed mini`).

Two consumers drain the same kind of backlog from a real Mosquitto, one after the other in the same run:

- pool: the real `facecap processor` (a subprocess), PUBACK after each store, with its default S3 client
  (awscrt's native client: `workers` puts at once, driven from the event loop it shares with the MQTT
  connection); pool-boto3: the same with s3Client boto3 (a pool of `workers` threads);
- sync: the old processors' way, one synchronous boto3 put per message (subscribe, put, next), PUBACK on
  receipt.

The faces are queued in the broker before the consumer starts, so the figure is what the consumer can
store, not how fast this script can publish. Progress and timing come from the heartbeat file each
consumer rewrites every 50 ms; resident memory is sampled from the consumer process. Afterwards every run's
objects are counted in the bucket. For scale, boto3 alone (no MQTT) puts the same faces 1 and
`--workers` at a time first: the most any consumer here could reach.

On loopback a put takes ~4 ms, nearly all of it CPU shared by the consumer and the S3 server, which is
not what the processor meets in the cloud. So both consumers run a second time through a proxy that
delays every answer of the S3 server by --latency-ms (20 ms: the order of a small PutObject to S3 in the
same region), which shows what the pool buys when each put waits on the server.

    python bench/processor.py [--faces 3000] [--size 30000] [--workers 16] [--sweep 4,8,32]
                              [--latency-ms 20] [--latency-faces 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import psutil

from facecap.contract import FaceMetadata, OutgoingFace, build_message
from facecap.devkit.servers import LOOPBACK, MosquittoServer, S3Server, free_port
from facecap.mqtt import MqttClient, MqttSettings

BUCKET = "facecap-bench"
TOPIC_FILTER = "faces/#"
HEARTBEAT_SECONDS = 0.05


@dataclass
class Result:
    name: str
    faces: int
    seconds: float
    peak_rss_mb: float
    cpu_ms_per_face: float
    objects: int

    @property
    def rate(self) -> float:
        return self.faces / self.seconds if self.seconds > 0 else 0.0


class LatencyProxy:
    """A TCP proxy on loopback that delivers the S3 server's answers `delay` seconds late, as a slower
    server farther away would. Requests pass at once; chunks keep their order."""

    def __init__(self, upstream_port: int, delay: float) -> None:
        self.upstream_port = upstream_port
        self.delay = delay
        self.port = free_port()
        self.endpoint = f"http://{LOOPBACK}:{self.port}"
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="latency-proxy", daemon=True)

    def start(self) -> LatencyProxy:
        self._thread.start()
        self._ready.wait(10)
        return self

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._serve, LOOPBACK, self.port))
        self._ready.set()
        self._loop.run_forever()
        server.close()

    async def _serve(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(LOOPBACK, self.upstream_port)
        await asyncio.gather(self._pipe(client_reader, upstream_writer, 0.0),
                             self._pipe(upstream_reader, client_writer, self.delay),
                             return_exceptions=True)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while (item := await queue.get())[1]:
                await asyncio.sleep(max(0.0, item[0] - time.monotonic()))
                writer.write(item[1])
                await writer.drain()
            writer.close()

        sender = asyncio.ensure_future(deliver())
        try:
            while chunk := await reader.read(65536):
                # boto3 sends `Expect: 100-continue`; S3's front end answers that at once, so only
                # the real answer waits.
                late = delay if not chunk.startswith(b"HTTP/1.1 100 ") else 0.0
                queue.put_nowait((time.monotonic() + late, chunk))
        finally:
            queue.put_nowait((0.0, b""))
            await sender


def make_faces(count: int, size: int) -> list[OutgoingFace]:
    faces = []
    for index in range(count):
        payload = b"\xff\xd8\xff\xe0" + os.urandom(size - 4)
        meta = FaceMetadata(device_id=f"jetson-{index % 4}", camera_id="cam0", captured_at=datetime.now(timezone.utc),
                            bbox=(100, 80, 120, 150), score=0.91, frame=index, track_id=str(index % 50),
                            detector="yunet")
        faces.append(build_message(payload, meta))
    return faces


def settings(broker: MosquittoServer, **extra: Any) -> MqttSettings:
    return MqttSettings(host=broker.host, port=broker.port, **extra)


def queue_backlog(broker: MosquittoServer, client_id: str, faces: list[OutgoingFace]) -> None:
    """Create the consumer's persistent session and subscription, then publish while it is away."""
    session = MqttClient(settings(broker), client_id, persistent=True)
    session.start()
    session.subscribe(TOPIC_FILTER)
    session.stop()
    publish_all(broker, f"{client_id}-publisher", faces)


def publish_all(broker: MosquittoServer, client_id: str, faces: list[OutgoingFace]) -> None:
    """Publish QoS 1 with many in flight and wait until the broker has every face."""
    publisher = MqttClient(settings(broker, max_in_flight=256), client_id)
    publisher.start()
    futures = [publisher.publish(f.topic, f.payload, content_type=f.content_type,
                                 user_properties=f.user_properties, timeout=60) for f in faces]
    for future in futures:
        assert future is not None
        future.result(60)
    publisher.stop()


def count_objects(s3: S3Server, prefix: str) -> int:
    client: Any = s3.client()
    total = 0
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix + "/"):
        total += len(page.get("Contents", []))
    return total


def run_consumer(name: str, argv: list[str], env: dict[str, str], *, heartbeat: Path, faces: int, log: Path,
                 timeout: float) -> tuple[float, float, float]:
    """Start a consumer, follow its heartbeat until `faces` are stored: (seconds, peak RSS MB, CPU s)."""
    heartbeat.unlink(missing_ok=True)
    with open(log, "ab") as out:
        process = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
    watched = psutil.Process(process.pid)
    peak_rss = 0
    first: tuple[float, int] | None = None
    first_cpu = 0.0
    last: tuple[float, int] = (0.0, 0)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and last[1] < faces:
            if process.poll() is not None:
                raise RuntimeError(f"{name} consumer exited with {process.returncode}; see {log}")
            peak_rss = max(peak_rss, watched.memory_info().rss)
            try:
                state = json.loads(heartbeat.read_text())
                last = (float(state["time"]), int(state["stored"]))
            except (OSError, ValueError, KeyError):
                pass
            if first is None and last[1] > 0:
                first = last
                first_cpu = sum(watched.cpu_times()[:2])
            time.sleep(HEARTBEAT_SECONDS / 2)
        cpu_seconds = sum(watched.cpu_times()[:2])
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(60)
    if last[1] < faces or first is None:
        raise RuntimeError(f"{name}: only {last[1]} of {faces} stored within {timeout:g} s; see {log}")
    # Time from the first heartbeat that saw a stored face to the one that saw them all, scaled to the
    # faces stored in between, so the start-up of the process does not count.
    seconds = (last[0] - first[0]) * faces / max(1, last[1] - first[1])
    # CPU likewise: from the first stored face on, so the imports and the connection do not count.
    cpu_seconds = (cpu_seconds - first_cpu) * faces / max(1, last[1] - first[1])
    return seconds, peak_rss / 1e6, cpu_seconds


def consumer_env(broker: MosquittoServer, s3: S3Server, *, client_id: str, prefix: str, heartbeat: Path,
                 workers: int, endpoint: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FACECAP_", "AWS_"))}
    env.update(s3.env())
    if endpoint:
        env["AWS_ENDPOINT_URL_S3"] = endpoint
    env.update({
        "FACECAP_STORE": f"s3://{BUCKET}/{prefix}",
        "FACECAP_MQTT__HOST": broker.host,
        "FACECAP_MQTT__PORT": str(broker.port),
        "FACECAP_MQTT__CLIENT_ID": client_id,
        "FACECAP_WORKERS": str(workers),
        "FACECAP_HEARTBEAT_FILE": str(heartbeat),
        "FACECAP_HEARTBEAT_INTERVAL_SECONDS": str(HEARTBEAT_SECONDS),
        "FACECAP_STATS_INTERVAL_SECONDS": "5",
        # The backlog comes from a handful of devices at far more than one device's ceiling (50 faces/s):
        # what is measured is the store, not the guard.
        "FACECAP_MAX_FACES_PER_SECOND_PER_DEVICE": "0",
    })
    return env


def measure(name: str, workers: int, broker: MosquittoServer, s3: S3Server, *, faces: list[OutgoingFace],
            folder: Path, endpoint: str | None = None) -> Result:
    client_id = f"facecap-bench-{name}"
    heartbeat = folder / f"{name}.heartbeat"
    queue_backlog(broker, client_id, faces)
    env = consumer_env(broker, s3, client_id=client_id, prefix=name, heartbeat=heartbeat, workers=workers,
                       endpoint=endpoint)
    if name.endswith("-boto3"):
        env["FACECAP_S3_CLIENT"] = "boto3"
    if name.startswith("sync"):
        argv = [sys.executable, str(Path(__file__).resolve()), "--sync-consumer"]
    else:
        argv = [sys.executable, "-m", "facecap.cli", "processor"]
    seconds, rss, cpu = run_consumer(name, argv, env, heartbeat=heartbeat, faces=len(faces),
                                     log=folder / f"{name}.log", timeout=max(120.0, len(faces) / 20))
    result = Result(name, len(faces), seconds, rss, 1000 * cpu / len(faces), count_objects(s3, name))
    print(f"  {name:>8}: {result.rate:7.1f} faces/s ({seconds:.2f} s), peak RSS {rss:6.1f} MB, "
          f"consumer CPU {result.cpu_ms_per_face:.2f} ms/face, objects {result.objects}/{len(faces)}", flush=True)
    return result


def server_ceiling(s3: S3Server, faces: list[OutgoingFace], threads: int) -> float:
    """Puts/s of boto3 alone, `threads` at a time, without MQTT: what the S3 server here can absorb."""
    from concurrent.futures import ThreadPoolExecutor

    import boto3
    from botocore.config import Config

    env = s3.env()
    fast = boto3.client("s3", endpoint_url=s3.endpoint, region_name=env["AWS_REGION"],
                        aws_access_key_id=env["AWS_ACCESS_KEY_ID"], aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
                        config=Config(max_pool_connections=threads + 2))

    def put(index: int) -> None:
        face = faces[index]
        fast.put_object(Bucket=BUCKET, Key=f"ceiling/{index}", Body=face.payload, ContentType=face.content_type,
                        ServerSideEncryption="AES256")

    started = time.monotonic()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(put, range(len(faces))))
    rate = len(faces) / (time.monotonic() - started)
    print(f"  boto3 alone, {threads:2d} at a time, no MQTT: {rate:7.1f} puts/s", flush=True)
    return rate


# --- the old way, run as the sync consumer process -------------------------------------------------------

def sync_consumer() -> int:
    """Subscribe, put, next: each message is stored by the receiving thread before the next is looked at,
    and acknowledged on receipt, as the processors this project replaces did."""
    from facecap.config import load_config
    from facecap.contract import parse_message
    from facecap.processor.config import ProcessorConfig
    from facecap.processor.heartbeat import write_heartbeat
    from facecap.storage import face_key, open_store

    config = load_config(ProcessorConfig, "processor")
    store = open_store(config.store, server_side_encryption=config.server_side_encryption, s3_client="boto3")
    stored = [0]

    def on_message(message: Any) -> None:
        face = parse_message(message.topic, message.payload, message.content_type, message.user_properties)
        store.put(face_key(face), face.payload, face.content_type, face.properties())
        stored[0] += 1

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    client = MqttClient(config.mqtt, config.client_id, persistent=True, on_message=on_message)
    client.start()
    client.subscribe(TOPIC_FILTER)
    heartbeat = Path(config.heartbeat_file)
    while not stop.wait(config.heartbeat_interval_seconds):
        write_heartbeat(heartbeat, {"stored": stored[0]})
    client.stop()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--faces", type=int, default=3000)
    parser.add_argument("--size", type=int, default=30_000, help="payload bytes per face")
    parser.add_argument("--workers", type=int, default=16, help="the processor's pool (its default is 16)")
    parser.add_argument("--sweep", default="", help="more pool sizes to try, e.g. 4,8,32")
    parser.add_argument("--latency-ms", type=float, default=20.0, help="added S3 answer delay; 0 skips those runs")
    parser.add_argument("--latency-faces", type=int, default=1000, help="faces per run with added latency")
    parser.add_argument("--sync-consumer", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.sync_consumer:
        return sync_consumer()

    faces = make_faces(args.faces, args.size)
    with tempfile.TemporaryDirectory(prefix="facecap-bench-") as tmp:
        folder = Path(tmp)
        broker = MosquittoServer(folder / "broker", persistence=False).start()
        s3 = S3Server(folder / "s3").start()
        try:
            client: Any = s3.client()
            client.create_bucket(Bucket=BUCKET)
            print(f"{args.faces} faces of {args.size // 1000} KB into {s3.endpoint} on {os.cpu_count()} cores")
            for threads in (1, args.workers):
                server_ceiling(s3, faces, threads)
            sync = measure("sync", 1, broker, s3, faces=faces, folder=folder)
            pool = measure("pool", args.workers, broker, s3, faces=faces, folder=folder)
            boto = measure("pool-boto3", args.workers, broker, s3, faces=faces, folder=folder)
            extra = [measure(f"pool{n}", n, broker, s3, faces=faces, folder=folder)
                     for n in (int(v) for v in args.sweep.split(",") if v)]
            if args.latency_ms > 0:
                proxy = LatencyProxy(s3.port, args.latency_ms / 1000).start()
                print(f"{args.latency_faces} faces with every S3 answer delayed by {args.latency_ms:g} ms")
                few = faces[: args.latency_faces]
                far = [measure("sync-far", 1, broker, s3, faces=few, folder=folder, endpoint=proxy.endpoint),
                       measure("pool-far", args.workers, broker, s3, faces=few, folder=folder,
                               endpoint=proxy.endpoint)]
                proxy.stop()
                extra += far
        finally:
            s3.stop()
            broker.stop()
    print(f"loopback: pool ({args.workers} workers) / sync: {pool.rate / sync.rate:.2f}x; "
          f"processor peak RSS {pool.peak_rss_mb:.0f} MB")
    if args.latency_ms > 0:
        print(f"+{args.latency_ms:g} ms S3 latency: pool / sync: {far[1].rate / far[0].rate:.2f}x")
    print(f"processor CPU per face: {pool.cpu_ms_per_face:.2f} ms with awscrt, {boto.cpu_ms_per_face:.2f} ms with "
          f"boto3; peak RSS {pool.peak_rss_mb:.0f} MB and {boto.peak_rss_mb:.0f} MB")
    complete = all(r.objects == r.faces for r in (sync, pool, boto, *extra))
    print("every run stored every face exactly once" if complete else "MISSING OR EXTRA OBJECTS")
    return 0 if complete else 1


if __name__ == "__main__":
    sys.exit(main())
