"""Faces across an uplink that can be cut without RST: the EdgeBroker (`facecap broker`, TLS by facecap) on
the host bridges over the uplink of a CloudNamespace to a cloud Mosquitto inside it; a subscriber reads
the faces over the namespace's datacenter link, which stays up; a publisher sends faces at a steady rate.
Used by tests/test_uplink_cut.py and bench/recovery.py.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from facecap.contract import FaceMetadata, build_message
from facecap.devkit.servers import CertificateAuthority
from facecap.mqtt import MqttClient, MqttSettings, ReceivedMessage
from facecap.receipts import encode_receipt, parse_receipt, receipt_topic

from .edgebroker import EdgeBroker
from .helpers import password_file
from .netns import CloudNamespace, NamespacedBroker
from .rig import Rig

DEVICE = "jetson-cut"
BRIDGE_ATTEMPT = "Connecting bridge"  # Mosquitto's notice at every bridge connection attempt


class UplinkRig(Rig):
    def __init__(self, folder: Path, *, bridge: dict[str, Any] | None = None, rate: float = 10.0,
                 size: int = 20_000, count: int | None = None, uplink_kbit: int | None = None) -> None:
        """Publishes `size`-byte faces at `rate` a second: `count` of them, or until closed. `uplink_kbit`:
        the uplink is a slow modem from the start (CloudNamespace.slow_down, 2 s of queue)."""
        self.uplink_kbit = uplink_kbit
        self.folder = folder
        self.bridge_overrides = bridge or {}
        self.rate = rate
        self.size = size
        self.count = count
        self.space = CloudNamespace()
        self.arrivals: list[tuple[float, str]] = []
        self.published: list[str] = []
        self.receipts: dict[str, float] = {}  # face id -> when its receipt reached the device
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._clients: list[MqttClient] = []
        self._publisher: threading.Thread | None = None
        self.edge: EdgeBroker | None = None

    def set_up(self) -> None:
        self.space.set_up()
        if self.uplink_kbit is not None:
            self.space.slow_down(self.uplink_kbit, queue_seconds=2.0)
        ca = CertificateAuthority(self.folder / "ca")
        users = {DEVICE: "device-pass", "reader": "reader-pass"}
        NamespacedBroker(self.space, self.folder / "cloud", ca, users).start()
        secret = self.folder / "device.password"
        secret.write_text("device-pass\n")
        bridge = {"host": self.space.uplink_address, "port": 8883, "tls": True, "caFile": str(ca.cert),
                  "username": DEVICE, "passwordFile": str(secret), **self.bridge_overrides}
        self.edge = EdgeBroker(self.folder / "edge", bridge, device_id=DEVICE).start()
        if not self.edge.wait_bridge_state("1", timeout=30):
            raise RuntimeError(f"the bridge did not connect:\n{self.edge.log_tail()}")
        cloud = MqttSettings(host=self.space.datacenter_address, port=8883, tls=True, ca_file=str(ca.cert),
                             username="reader", password_file=password_file("reader-pass"),
                             session_expiry_seconds=3600)
        # The processor's part in the receipts: one, QoS 1, for each face that reaches the cloud.
        self._confirmer = MqttClient(cloud, "cut-confirmer")
        self._clients.append(self._confirmer)
        self._confirmer.start()
        receipts = MqttClient(self.edge.settings("detector"), "cut-receipts", on_message=self._confirmed)
        self._clients.append(receipts)
        receipts.start()
        receipts.subscribe(receipt_topic(DEVICE))
        reader = MqttClient(cloud, "cut-reader", persistent=True, on_message=self._arrived)
        self._clients.append(reader)
        reader.start()
        reader.subscribe("faces/#")
        publisher = MqttClient(self.edge.settings("detector"), "cut-publisher")
        self._clients.append(publisher)
        publisher.start()
        self._publisher = threading.Thread(target=self._publish, args=(publisher,), daemon=True)
        self._publisher.start()

    def _arrived(self, message: ReceivedMessage) -> None:
        face_id = dict(message.user_properties).get("face-id", "")
        with self._lock:
            self.arrivals.append((time.monotonic(), face_id))
        self._confirmer.publish(receipt_topic(DEVICE), encode_receipt([face_id]), block=False)

    def _confirmed(self, message: ReceivedMessage) -> None:
        now = time.monotonic()
        with self._lock:
            for face_id in parse_receipt(message.payload).face_ids:
                self.receipts.setdefault(face_id, now)

    def receipt_delays(self) -> dict[str, float]:
        """Seconds from each face's arrival in the cloud to its receipt's arrival on the device."""
        with self._lock:
            arrived = {face_id: when for when, face_id in self.arrivals}
            return {face_id: when - arrived[face_id] for face_id, when in self.receipts.items()
                    if face_id in arrived}

    def _publish(self, client: MqttClient) -> None:
        body = bytes(range(256)) * (self.size // 256 + 1)
        start, frame = time.monotonic(), 0
        while frame != self.count and not self._stop.wait(max(0.0, start + frame / self.rate - time.monotonic())):
            payload = b"\xff\xd8\xff\xe0" + frame.to_bytes(8, "big") + body[: self.size - 12]
            face = build_message(payload, FaceMetadata(device_id=DEVICE, camera_id="cam0",
                                                       captured_at=datetime.now(timezone.utc),
                                                       bbox=(1, 2, 64, 80), score=0.9, frame=frame))
            # The edge broker takes every face while the uplink is down (it queues them for the bridge).
            client.publish(face.topic, face.payload, content_type=face.content_type,
                           user_properties=face.user_properties, timeout=30)
            with self._lock:
                self.published.append(face.face_id)
            frame += 1

    def cut(self) -> float:
        self.space.cut()
        return time.monotonic()

    def restore(self) -> float:
        self.space.restore()
        return time.monotonic()

    def first_arrival_after(self, moment: float, timeout: float) -> float | None:
        """Seconds from `moment` to the first face that arrived after it, waiting up to `timeout`."""
        deadline = moment + timeout
        while True:
            with self._lock:
                later = [when for when, _ in self.arrivals if when > moment]
            if later:
                return min(later) - moment
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.05)

    def missing(self, timeout: float) -> set[str]:
        """Faces published at least a second ago that have not arrived, after waiting up to `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                lost = set(self.published[: max(0, len(self.published) - int(self.rate))])
                lost -= {face_id for _, face_id in self.arrivals}
            if not lost or time.monotonic() >= deadline:
                return lost
            time.sleep(0.2)

    def arrived(self) -> set[str]:
        with self._lock:
            return {face_id for _, face_id in self.arrivals}

    def bridge_attempts(self) -> int:
        return self.edge.log_text().count(BRIDGE_ATTEMPT) if self.edge else 0

    def close(self) -> None:
        self._stop.set()
        if self._publisher is not None:
            self._publisher.join(10)
        for client in reversed(self._clients):
            client.stop(timeout=2)
        if self.edge is not None:
            self.edge.stop()
        self.space.close()
