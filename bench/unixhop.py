"""Prototype figure for the Unix-socket local hop (issue 14, item 1, not built yet): capture-to-store latency
at a fixed rate through the whole pipeline, with the publisher on the EdgeBroker's TCP loopback listener
and on a Unix socket listener, in the same run.

The EdgeBroker gets its Unix listener through `extraConfig` (`listener 0 <path>`), and this script's
publisher reaches it by patching awscrt's MQTT5 client options (SocketDomain.Local, the path as the host,
port 0), since facecap's MQTT client has no such option yet. Everything else is `bench/pipeline.py`'s.

    python bench/unixhop.py [--rate 20] [--seconds 20] [--size 30000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from awscrt import io, mqtt5

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script: `bench` is importable
from bench.pipeline import Phase, StoreLog, run_phase
from facecap.devkit.demo.pipeline import LocalPipeline, PipelineSettings
from facecap.mqtt import MqttClient, MqttSettings
from facecap.polling import wait_until
from facecap.stats import percentile

_CLIENT_OPTIONS = mqtt5.ClientOptions


def _options_with_unix_sockets(**options: Any) -> Any:
    """awscrt's ClientOptions, with a host that is a path turned into a Unix socket connection."""
    if str(options.get("host_name", "")).startswith("/"):
        socket_options = io.SocketOptions()
        socket_options.domain = io.SocketDomain.Local
        options.update(port=0, socket_options=socket_options)
    return _CLIENT_OPTIONS(**options)


class UnixHopPipeline(LocalPipeline):
    def __init__(self, settings: PipelineSettings) -> None:
        super().__init__(settings)
        self.socket_path = self.workdir / "edge-broker.sock"

    def broker_config(self) -> dict[str, Any]:
        config = super().broker_config()
        config["extraConfig"] = [f"listener 0 {self.socket_path}"]
        return config


def measure(pipeline: UnixHopPipeline, store_log: StoreLog, name: str, host: str, args: argparse.Namespace) -> None:
    client = MqttClient(MqttSettings(host=host, port=pipeline.edge_port, max_in_flight=256), f"bench-{name}")
    client.start()
    try:
        phase = Phase(name)
        run_phase(client, phase, args.size, int(args.rate * args.seconds), args.rate)
        wait_until(lambda: len(store_log.latencies(phase.face_ids)[0]) >= len(phase.face_ids), 60, 0.5)
        latencies, _ = store_log.latencies(phase.face_ids)
        print(f"{name:<22}{len(phase.face_ids):>7}{len(latencies):>8}{statistics.median(latencies):>9.1f}"
              f"{percentile(latencies, 0.99):>9.1f}{max(latencies):>9.1f}", flush=True)
    finally:
        client.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--size", type=int, default=30_000)
    args = parser.parse_args()
    mqtt5.ClientOptions = _options_with_unix_sockets
    with tempfile.TemporaryDirectory(prefix="facecap-bench-unixhop-") as folder:
        pipeline = UnixHopPipeline(PipelineSettings(workdir=Path(folder), store="s3",
                                                    processor_overrides={"logging": {"level": "DEBUG"}}))
        try:
            pipeline.start_cloud()
            processor = pipeline.start_processor()
            pipeline.start_edge_broker()
            store_log = StoreLog(processor.log)
            print(f"capture to store at {args.rate:g} faces/s of {args.size} B through the TLS bridge into S3, "
                  f"by the publisher's hop to the EdgeBroker\n")
            print(f"{'publisher hop':<22}{'faces':>7}{'stored':>8}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}")
            measure(pipeline, store_log, "warm-up (TCP)", "127.0.0.1", argparse.Namespace(**{**vars(args),
                                                                                             "seconds": 2}))
            time.sleep(1)
            measure(pipeline, store_log, "TCP loopback", "127.0.0.1", args)
            time.sleep(1)
            measure(pipeline, store_log, "Unix socket", str(pipeline.socket_path), args)
        finally:
            pipeline.stop_all()


if __name__ == "__main__":
    main()
