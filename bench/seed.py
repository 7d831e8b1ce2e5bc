"""The seed-style pipeline that `bench/pipeline.py --compare-seed` measures against facecap's, on the same
cloud broker and S3 server: what this project replaced.

- the edge broker: a plain Mosquitto that lets anyone in, as the seed's was (the benchmark starts it on a
  free loopback port; facecap's EdgeBroker, rightly, refuses a publisher that is not one of its identities);
- forwarder: subscribes to `faces/#` on that broker at QoS 0 and republishes every message to the cloud
  broker at QoS 0 (with the device's login), one process in place of the TLS bridge;
- processor: subscribes to `faces/#` on the cloud broker at QoS 0 and stores each face with one
  synchronous boto3 PutObject before it looks at the next message.

The benchmark stops facecap's processor meanwhile, so only the seed-style parts handle these faces. Each
part runs as its own process, so its CPU time is counted apart:

    python bench/seed.py forwarder --edge JSON --cloud JSON
    python bench/seed.py processor --cloud JSON --store s3://bucket/prefix
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from datetime import datetime, timezone

from facecap.contract import parse_message
from facecap.logs import setup_logging
from facecap.mqtt import MqttClient, MqttSettings, ReceivedMessage
from facecap.storage import face_key, open_store

log = logging.getLogger("facecap.bench.seed")


def run_forwarder(edge: MqttSettings, cloud: MqttSettings) -> None:
    upstream = MqttClient(cloud, "seed-forwarder-cloud")
    upstream.start()

    def forward(message: ReceivedMessage) -> None:
        upstream.publish(message.topic, message.payload, qos=0,
                         content_type=message.content_type, user_properties=message.user_properties)

    _serve(MqttClient(edge, "seed-forwarder-edge", on_message=forward), "forwarding faces/# at QoS 0")
    upstream.stop()


def run_processor(cloud: MqttSettings, store_url: str) -> None:
    store = open_store(store_url, s3_client="boto3")

    def store_one(message: ReceivedMessage) -> None:
        face = parse_message(message.topic, message.payload, message.content_type, message.user_properties)
        key = face_key(face)
        store.put(key, face.payload, face.content_type, face.properties())
        # The line bench/pipeline.py reads, as facecap's processor writes it.
        captured = face.captured_at
        latency = (datetime.now(timezone.utc) - captured).total_seconds() * 1000 if captured else 0.0
        log.debug("stored %s face-id=%s capture_to_store_ms=%.1f", key, face.face_id, latency)

    _serve(MqttClient(cloud, "seed-processor", on_message=store_one), "subscribed to faces/# at QoS 0")


def _serve(client: MqttClient, ready: str) -> None:
    """Subscribe to faces/# at QoS 0, as the seed's parts did, and run until SIGTERM. `ready` is the line
    bench/pipeline.py waits for."""
    client.start()
    client.subscribe("faces/#", qos=0)
    log.info("%s", ready)
    _wait_for_sigterm()
    client.stop()


def _wait_for_sigterm() -> None:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    while not stop.wait(1.0):
        pass


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("part", choices=("forwarder", "processor"))
    parser.add_argument("--edge", help="MqttSettings of the edge broker (JSON)")
    parser.add_argument("--cloud", required=True, help="MqttSettings of the cloud broker (JSON)")
    parser.add_argument("--store", help="store URL of the processor")
    args = parser.parse_args()
    setup_logging("DEBUG")
    cloud = MqttSettings.model_validate(json.loads(args.cloud))
    if args.part == "forwarder":
        run_forwarder(MqttSettings.model_validate(json.loads(args.edge)), cloud)
    else:
        run_processor(cloud, args.store)
    return 0


if __name__ == "__main__":
    sys.exit(main())
