"""EdgeBroker bridge figures: throughput and latency of faces from the edge broker to the cloud broker, and
how a backlog built during a cloud outage costs memory and disk and drains afterwards.

Both brokers are real Mosquitto processes on loopback: the edge one started by `facecap broker` from its
rendered conf, the cloud one plain. Loopback hides network latency, so these are the brokers' own costs.

    python bench/bridge.py [--faces 2000] [--size 20000] [--backlog 5000] [--tls off|facecap|mosquitto]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import psutil

from facecap.contract import FaceMetadata, OutgoingFace, build_message
from facecap.devkit.servers import (
    LOOPBACK,
    CertificateAuthority,
    MosquittoServer,
    free_port,
    stop_process,
    wait_for_port,
)
from facecap.mqtt import MqttClient, MqttSettings, ReceivedMessage
from facecap.stats import percentile


def faces(count: int, size: int) -> list[OutgoingFace]:
    body = bytes(range(256)) * (size // 256 + 1)
    out = []
    for i in range(count):
        payload = b"\xff\xd8\xff\xe0" + i.to_bytes(8, "big") + body[: size - 12]
        meta = FaceMetadata(device_id="bench", camera_id="cam0", captured_at=datetime.now(timezone.utc),
                            bbox=(1, 2, 64, 80), score=0.9, frame=i)
        out.append(build_message(payload, meta))
    return out


class Arrivals:
    def __init__(self) -> None:
        self.times: dict[str, float] = {}
        self.count = 0
        self.cond = threading.Condition()

    def __call__(self, message: ReceivedMessage) -> None:
        with self.cond:
            self.times.setdefault(dict(message.user_properties)["face-id"], time.perf_counter())
            self.count += 1
            self.cond.notify_all()

    def wait_distinct(self, count: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self.cond:
            while len(self.times) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.cond.wait(left)
        return True


def start_edge(folder: Path, cloud: MosquittoServer, tls: str) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    bridge: dict[str, object] = {"host": cloud.host, "port": cloud.port, "tls": tls != "off",
                                 "restartBaseSeconds": 1, "restartCapSeconds": 2}
    if tls != "off":
        assert cloud.ca is not None
        bridge.update(tlsBy=tls, caFile=str(cloud.ca.cert))
    # The TCP listener too, and a 5 s autosave clock, so that this benchmark's figures stay comparable with
    # the earlier ones.
    config = {"deviceId": "bench", "local": {"port": port, "tcp": True}, "bridge": bridge,
              "persistence": {"autosaveIntervalSeconds": 5}}
    log = open(folder / "edge.log", "wb")  # noqa: SIM115 - lives as long as the broker
    process = subprocess.Popen([sys.executable, "-m", "facecap.cli", "broker", "--config", json.dumps(config)],
                               cwd=folder, stdout=log, stderr=subprocess.STDOUT)
    wait_for_port(port, process, 15, folder / "edge.log")
    return process, port


def mosquitto_child(process: subprocess.Popen[bytes]) -> psutil.Process:
    children = psutil.Process(process.pid).children()
    return next(c for c in children if "mosquitto" in c.name())


def client(port: int, name: str, on_message: object = None, *, persistent: bool = False,
           ca_file: str = "", identity: tuple[str, Path] | None = None) -> MqttClient:
    """identity: (user, the edge broker's run folder) for a local client, which must log in."""
    login = {}
    if identity:
        login = {"username": identity[0], "password_file": str(identity[1] / f"{identity[0]}.password")}
    settings = MqttSettings(host=LOOPBACK, port=port, max_in_flight=256, max_reconnect_delay_seconds=1,
                            tls=bool(ca_file), ca_file=ca_file, **login)
    made = MqttClient(settings, name, on_message=on_message, persistent=persistent)  # type: ignore[arg-type]
    made.start()
    return made


def publish(pub: MqttClient, batch: list[OutgoingFace], sent_at: dict[str, float], rate: float = 0.0) -> None:
    start = time.perf_counter()
    futures = []
    for i, face in enumerate(batch):
        if rate:
            time.sleep(max(0.0, start + i / rate - time.perf_counter()))
        sent_at[face.face_id] = time.perf_counter()
        futures.append(pub.publish(face.topic, face.payload, content_type=face.content_type,
                                   user_properties=face.user_properties))
    for future in futures:
        assert future is not None
        future.result(timeout=120)


def throughput(pub: MqttClient, at_cloud: Arrivals, count: int, size: int) -> None:
    """Everything at once, many publishes in flight."""
    batch = faces(count, size)
    start = time.perf_counter()
    publish(pub, batch, {})
    at_cloud.wait_distinct(count, 120)
    elapsed = time.perf_counter() - start
    print(f"throughput: {count} faces of {size} B edge->cloud in {elapsed:.2f} s = {count / elapsed:.0f} faces/s, "
          f"{count * size / 1e6 / elapsed:.1f} MB/s")


def latency(pub: MqttClient, at_edge: Arrivals, at_cloud: Arrivals, size: int) -> None:
    """At a detector-like pace, as seen by a subscriber on the edge broker and one on the cloud broker:
    the difference is what the bridge adds."""
    for arrivals in (at_edge, at_cloud):
        arrivals.times.clear()
    paced = faces(200, size)
    sent: dict[str, float] = {}
    publish(pub, paced, sent, rate=20.0)
    for arrivals in (at_edge, at_cloud):
        arrivals.wait_distinct(len(paced), 60)
    for where, arrivals in (("edge", at_edge), ("cloud", at_cloud)):
        ms = [(arrivals.times[i] - sent[i]) * 1000 for i in sent]
        print(f"latency at 20 faces/s of {size} B, subscriber on the {where} broker: "
              f"p50 {statistics.median(ms):.1f} ms, p95 {percentile(ms, 0.95):.1f} ms, max {max(ms):.1f} ms")


def backlog(pub: MqttClient, at_cloud: Arrivals, cloud: MosquittoServer, edge: subprocess.Popen[bytes],
            edge_dir: Path, *, count: int, size: int) -> None:
    """The cloud goes away, faces queue at the edge (memory, disk); then the drain once it is back."""
    broker = mosquitto_child(edge)
    rss_before = broker.memory_info().rss
    cloud.stop()
    at_cloud.times.clear()
    start = time.perf_counter()
    publish(pub, faces(count, size), {})
    queued_in = time.perf_counter() - start
    time.sleep(6)  # past one autosave interval, so the store on disk holds the backlog
    rss_after = broker.memory_info().rss
    db = edge_dir / "mosquitto.db"
    db_size = db.stat().st_size if db.exists() else 0
    print(f"backlog: {count} faces ({count * size / 1e6:.0f} MB payload) queued in {queued_in:.2f} s; "
          f"mosquitto RSS +{(rss_after - rss_before) / 1e6:.0f} MB, mosquitto.db {db_size / 1e6:.0f} MB")
    start = time.perf_counter()
    cloud.start()
    complete = at_cloud.wait_distinct(count, 300)
    drain = time.perf_counter() - start
    got = len(at_cloud.times)
    print(f"drain after the cloud returned: {got}/{count} in {drain:.2f} s ({got / drain:.0f} faces/s, "
          f"reconnect included){'' if complete else ' INCOMPLETE'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--faces", type=int, default=2000, help="faces for the throughput run")
    parser.add_argument("--size", type=int, default=20_000, help="payload bytes per face")
    parser.add_argument("--backlog", type=int, default=5000, help="faces queued during the outage run")
    parser.add_argument("--tls", choices=("off", "facecap", "mosquitto"), default="off",
                        help="bridge to a TLS cloud broker, TLS done by facecap's forwarder or by Mosquitto "
                             "(bridge.tlsBy); off: plain TCP (default)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="facecap-bench-bridge-") as tmp:
        folder = Path(tmp)
        ca = CertificateAuthority(folder / "ca") if args.tls != "off" else None
        cloud = MosquittoServer(folder / "cloud", ca=ca, persistence=True).start()
        edge_dir = folder / "edge"
        edge_dir.mkdir()
        edge, edge_port = start_edge(edge_dir, cloud, args.tls)
        print(f"bridge TLS: {args.tls}")
        try:
            at_cloud, at_edge = Arrivals(), Arrivals()
            cloud_sub = client(cloud.port, "bench-cloud-sub", at_cloud, persistent=True,
                               ca_file=str(ca.cert) if ca else "")
            cloud_sub.subscribe("faces/#")
            edge_sub = client(edge_port, "bench-edge-sub", at_edge, identity=("monitor", edge_dir / "local"))
            edge_sub.subscribe("faces/#")
            pub = client(edge_port, "bench-detector", identity=("detector", edge_dir / "local"))
            time.sleep(1.0)  # let the bridge connect
            throughput(pub, at_cloud, args.faces, args.size)
            for size in (2_000, args.size):
                latency(pub, at_edge, at_cloud, size)
            edge_sub.stop()
            backlog(pub, at_cloud, cloud, edge, edge_dir, count=args.backlog, size=args.size)
            pub.stop()
            cloud_sub.stop()
        finally:
            stop_process(edge)
            cloud.stop()


if __name__ == "__main__":
    main()
