"""The EdgeBroker for real: `facecap broker` runs Mosquitto from its rendered conf ("edge") and bridges to a
second Mosquitto ("cloud"); messages, outages, TLS, passwords and restarts are checked end to end."""

from __future__ import annotations

import json
import re
import socket
import stat
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from datetime import datetime, timezone
from pathlib import Path

import psutil
import pytest

from facecap.broker.config import BrokerConfig
from facecap.broker.preflight import preflight
from facecap.broker.store import store_problem
from facecap.config import load_config
from facecap.contract import DEFAULT_MAX_PAYLOAD_BYTES, FaceMetadata, OutgoingFace, build_message, parse_message
from facecap.devkit.link import TcpProxy
from facecap.devkit.servers import CertificateAuthority, MosquittoServer
from facecap.errors import ConfigError, PublishError
from facecap.mqtt import MqttClient
from facecap.polling import wait_until

from .conftest import REPO, MosquittoFactory, require_binary
from .support.edgebroker import EdgeBroker, bridge_to
from .support.helpers import Collector, fake_jpeg, publish_all, sample_face, settings_for

pytestmark = pytest.mark.integration


@pytest.fixture
def edges() -> Iterator[list[EdgeBroker]]:
    """Edge brokers a test starts; each is stopped at teardown."""
    require_binary("mosquitto", "apt-get install mosquitto")
    started: list[EdgeBroker] = []
    yield started
    for edge in started:
        edge.stop()


def start_edge(edges: list[EdgeBroker], folder: Path, bridge: dict[str, object], **kwargs: object) -> EdgeBroker:
    edge = EdgeBroker(folder, bridge, **kwargs)  # type: ignore[arg-type]
    edges.append(edge)
    return edge.start()


def bridged_edge(mosquitto: MosquittoFactory, edges: list[EdgeBroker], tmp_path: Path,
                 **cloud_options: object) -> tuple[MosquittoServer, EdgeBroker]:
    """A plain cloud broker and an edge broker whose bridge to it is up."""
    cloud = mosquitto("cloud", **cloud_options)
    edge = start_edge(edges, tmp_path / "edge", bridge_to(cloud))
    assert edge.wait_bridge_state("1"), edge.log_tail()
    return cloud, edge


def edge_client(edge: EdgeBroker, name: str) -> MqttClient:
    """A client of the edge broker over its Unix socket: the detector's identity for a publisher, the
    read-only monitor's for anything else (the ACL allows no more)."""
    identity = "detector" if name == "detector" else "monitor"
    settings = edge.settings(identity, min_reconnect_delay_seconds=0.2, max_reconnect_delay_seconds=1)
    client = MqttClient(settings, name)
    client.start()
    return client


def photo_faces(shared_dir: Path, count: int) -> list[OutgoingFace]:
    """Contract v1 messages whose payloads are real photos, JPEG and PNG."""
    images = sorted((shared_dir / "faces" / "dev" / "images").iterdir())
    chosen = [p for p in images if p.suffix == ".png"][:1] + [p for p in images if p.suffix == ".jpg"][: count - 1]
    faces = []
    for frame, path in enumerate(chosen):
        meta = FaceMetadata(device_id="jetson-test", camera_id="cam0", captured_at=datetime.now(timezone.utc),
                            bbox=(frame, 2 * frame, 64, 80), score=0.5 + frame / 100, frame=frame,
                            track_id=f"t{frame}", detector="yunet")
        faces.append(build_message(path.read_bytes(), meta))
    return faces


def one_face_crosses(edge: EdgeBroker, received: Collector) -> None:
    """A face published on the edge broker arrives, intact, at the cloud subscriber collecting into `received`."""
    pub = edge_client(edge, "detector")
    face = sample_face(device="jetson-test")
    publish_all(pub, [face])
    assert received.wait_for(1), edge.log_tail()
    assert received.messages[0].payload == face.payload
    pub.stop()


def cloud_consumer(cloud: MosquittoServer, client_id: str, **settings: object) -> tuple[Collector, MqttClient]:
    """A subscriber to faces/# on the cloud broker with a persistent session, as the processor has, so what
    the bridge delivers while it is away (or right after the cloud comes back) waits for it."""
    received = Collector()
    sub = MqttClient(settings_for(cloud, session_expiry_seconds=600, **settings), client_id, persistent=True,
                     on_message=received)
    sub.start()
    sub.subscribe("faces/#")
    return received, sub


class PacedPublisher:
    """Publishes `faces` through `client` at `rate` a second from a thread of its own, keeping every
    publish's future (the broker's PUBACK)."""

    def __init__(self, client: MqttClient, faces: list[OutgoingFace], rate: float) -> None:
        self.futures: list[Future[None] | None] = []
        self._thread = threading.Thread(target=self._run, args=(client, faces, rate))
        self._thread.start()

    def _run(self, client: MqttClient, faces: list[OutgoingFace], rate: float) -> None:
        start = time.monotonic()
        for i, face in enumerate(faces):
            time.sleep(max(0.0, start + i / rate - time.monotonic()))
            self.futures.append(client.publish(face.topic, face.payload, content_type=face.content_type,
                                               user_properties=face.user_properties))

    def join_acknowledged(self) -> None:
        """Wait for the last publish, then for the broker's acknowledgement of every face."""
        self._thread.join()
        for future in self.futures:
            assert future is not None
            future.result(timeout=10)


def arrived_face_ids(received: Collector, sent: set[str], timeout: float = 60) -> list[str]:
    """Wait until every face id in `sent` has arrived (or `timeout`); the face id of every message received."""
    def ids() -> list[str]:
        return [dict(m.user_properties)["face-id"] for m in received.messages]

    wait_until(lambda: sent <= set(ids()), timeout)
    return ids()


def test_contract_messages_cross_the_bridge_with_payload_and_properties_intact(
        mosquitto: MosquittoFactory, edges: list[EdgeBroker], tmp_path: Path, shared_dir: Path) -> None:
    cloud, edge = bridged_edge(mosquitto, edges, tmp_path)
    received = Collector()
    sub = MqttClient(settings_for(cloud), "cloud-reader", on_message=received)
    sub.start()
    sub.subscribe("faces/#")
    faces = photo_faces(shared_dir, 8)
    legacy = faces[1].payload  # a bare image from an older publisher: no properties at all
    pub = edge_client(edge, "detector")
    publish_all(pub, faces)
    done = pub.publish("faces/jetson-test/old-cam", legacy)
    assert done is not None
    done.result(timeout=10)

    assert received.wait_for(len(faces) + 1), f"{len(received.messages)} arrived\n{edge.log_tail()}"
    by_topic_and_id = {(m.topic, dict(m.user_properties).get("face-id")): m for m in received.messages}
    for face in faces:
        got = by_topic_and_id[(face.topic, face.face_id)]
        assert got.payload == face.payload
        assert got.content_type == face.content_type
        assert got.user_properties == face.user_properties  # all eleven, in order
        assert got.qos == 1
        assert parse_message(got.topic, got.payload, got.content_type, got.user_properties).face_id == face.face_id
    old = by_topic_and_id[("faces/jetson-test/old-cam", None)]
    assert old.payload == legacy
    assert old.user_properties == ()
    assert old.content_type is None
    assert {f.content_type for f in faces} == {"image/jpeg", "image/png"}
    # The bridge speaks MQTT 5 with the stable client id derived from the device id.
    assert "as facecap-edge-jetson-test (p5, c0" in cloud.log_text()
    pub.stop()
    sub.stop()


def test_cloud_outage_of_15_s_loses_no_face(mosquitto: MosquittoFactory, edges: list[EdgeBroker],
                                            tmp_path: Path) -> None:
    cloud, edge = bridged_edge(mosquitto, edges, tmp_path)
    received, sub = cloud_consumer(cloud, "cloud-processor")
    pub = edge_client(edge, "detector")

    total, rate = 500, 50.0
    faces = [sample_face(device="jetson-test", size=20_000, frame=i) for i in range(total)]
    publisher = PacedPublisher(pub, faces, rate)
    time.sleep(2.0)
    cloud.stop()
    outage_started = time.monotonic()
    assert edge.wait_bridge_state("0", timeout=5), "the edge never noticed the outage"
    time.sleep(max(0.0, 15.0 - (time.monotonic() - outage_started)))
    cloud.start()
    publisher.join_acknowledged()  # the edge accepted every face while the cloud was away
    sent = {f.face_id for f in faces}
    ids = arrived_face_ids(received, sent)
    missing = sent - set(ids)
    duplicates = len(ids) - len(set(ids))
    print(f"\ncloud outage 15 s, {total} faces at {rate:g}/s: received {len(ids)}, distinct {len(set(ids))}, "
          f"missing {len(missing)}, duplicates {duplicates}")
    assert not missing, f"{len(missing)} faces lost\n{edge.log_tail()}"
    assert "Outgoing messages are being dropped" not in edge.log_text()
    pub.stop()
    sub.stop()


def test_uplink_cut_for_30_s_leaves_the_edge_answering_and_loses_no_face(
        mosquitto: MosquittoFactory, ca: CertificateAuthority, edges: list[EdgeBroker], tmp_path: Path) -> None:
    """The field failure of Mosquitto 2.0.11 bridging with TLS itself: with the uplink down it spun at 100%
    CPU and stopped answering its own clients. With facecap doing the TLS, the edge broker keeps answering
    every second of a 30 s cut (accept-and-close, as a lost route through a NAT looks), queues the faces,
    delivers every one after the restore, and still stops cleanly on SIGTERM."""
    cloud = mosquitto("cloud", ca=ca, users={"jetson-test": "bridge-pass", "reader": "reader-pass"})
    link = TcpProxy(cloud.port)
    secret = tmp_path / "bridge-password"
    secret.write_text("bridge-pass\n")
    bridge = bridge_to(cloud, port=link.port, username="jetson-test", passwordFile=str(secret))
    edge = start_edge(edges, tmp_path / "edge", bridge)
    try:
        assert edge.wait_bridge_state("1"), edge.log_tail()
        received, sub = cloud_consumer(cloud, "cloud-processor-cut", tls=True, ca_file=str(ca.cert),
                                       username="reader", password="reader-pass")
        pub = edge_client(edge, "detector")
        faces = [sample_face(device="jetson-test", size=20_000, frame=i) for i in range(360)]
        rate = 10.0
        publisher = PacedPublisher(pub, faces, rate)
        time.sleep(2.0)
        link.cut()
        cut_at = time.monotonic()
        probes: list[tuple[float, bool]] = []
        while time.monotonic() - cut_at < 30.0:
            began = time.monotonic()
            probes.append((round(began - cut_at, 1), edge.answers(timeout=2.0)))
            time.sleep(max(0.0, began + 1.0 - time.monotonic()))
        assert edge.bridge_state() == "0"
        link.restore()
        publisher.join_acknowledged()  # the edge took every face while the uplink was down
        sent = {f.face_id for f in faces}
        ids = arrived_face_ids(received, sent)
        missing = sent - set(ids)
        attempts = edge.log_text().count("Connecting bridge (step 1)")
        print(f"\nuplink cut 30 s, {len(faces)} faces at {rate:g}/s: {len(probes)} probes, "
              f"{sum(not ok for _, ok in probes)} unanswered; {attempts} bridge attempts; received {len(ids)}, "
              f"missing {len(missing)}, duplicates {len(ids) - len(set(ids))}")
        assert all(ok for _, ok in probes), f"unanswered at {[t for t, ok in probes if not ok]}\n{edge.log_tail()}"
        assert len(probes) >= 25
        assert attempts >= 5, "the bridge should have retried during the cut"
        assert not missing, f"{len(missing)} faces lost\n{edge.log_tail()}"
        # The forwarder counted the attempts the cut made fail and said so when the link came back.
        assert re.search(r"bridge TLS to \S+ established .* after \d+ attempts? failed", edge.log_text()), \
            edge.log_tail()
        pub.stop()
        sub.stop()
        started = time.monotonic()
        assert edge.stop(timeout=15) == 0  # SIGTERM still works: Mosquitto saved its store and exited
        assert time.monotonic() - started < 10
    finally:
        link.close()


def test_queued_faces_survive_a_restart_of_the_edge_broker(mosquitto: MosquittoFactory, edges: list[EdgeBroker],
                                                          tmp_path: Path) -> None:
    cloud, edge = bridged_edge(mosquitto, edges, tmp_path)
    received, sub = cloud_consumer(cloud, "cloud-processor-restart")
    cloud.stop()
    pub = edge_client(edge, "detector")
    faces = [sample_face(device="jetson-test", size=10_000, frame=i) for i in range(50)]
    publish_all(pub, faces)
    pub.stop()

    assert edge.stop() == 0  # SIGTERM reaches Mosquitto, which saves its store and exits cleanly
    assert "Saving in-memory database" in edge.log_text()
    assert (edge.folder / "mosquitto.db").is_file()  # in the work folder, as on a device
    edge.start()
    cloud.start()
    assert received.wait_for(50, timeout=30), f"{len(received.messages)} of 50\n{edge.log_tail()}"
    assert {dict(m.user_properties)["face-id"] for m in received.messages} == {f.face_id for f in faces}
    sub.stop()


def test_a_store_the_disk_cut_short_is_set_aside_and_the_broker_starts(mosquitto: MosquittoFactory,
                                                                       edges: list[EdgeBroker],
                                                                       tmp_path: Path) -> None:
    """Mosquitto 2.0.11 will not start on a store it cannot read ("Couldn't open database."): the device
    would lose its broker until someone deleted the file. The EdgeBroker moves such a store aside."""
    cloud, edge = bridged_edge(mosquitto, edges, tmp_path)
    cloud.stop()
    pub = edge_client(edge, "detector")
    publish_all(pub, [sample_face(device="jetson-test", size=10_000, frame=i) for i in range(20)])
    pub.stop()
    assert edge.stop() == 0
    store = edge.folder / "mosquitto.db"
    whole = store.read_bytes()
    assert store_problem(store) is None  # what Mosquitto wrote walks to its end
    # Cut in the middle of the first message (the chunk after the configuration chunk), as a disk that fills
    # up during a save leaves the file: header (23 bytes), then chunks of type and length (4 + 4 bytes).
    config_length = struct.unpack_from("!I", whole, 23 + 4)[0]
    message_at = 23 + 8 + config_length
    kind, length = struct.unpack_from("!II", whole, message_at)
    assert kind == 2  # a stored message
    cut = whole[: message_at + 8 + length // 2]
    store.write_bytes(cut)

    edge.start()  # without the check, Mosquitto exits at once and the port never opens
    assert edge.answers()
    assert edge.wait_for_log(f"ERROR facecap.broker.store: {store} has a chunk that runs past the end of the file"), \
        edge.log_tail()
    aside = [path for path in edge.folder.iterdir() if path.name.startswith("mosquitto.db.unreadable-")]
    assert len(aside) == 1 and aside[0].read_bytes() == cut  # kept, not deleted
    cloud.start()
    assert edge.wait_bridge_state("1"), edge.log_tail()


def saves(edge: EdgeBroker) -> int:
    """How often Mosquitto has written its store since the broker started (the log says each time)."""
    return edge.log_text().count("Saving in-memory database")


@pytest.mark.parametrize("autosave", ["changes", "clock"])
def test_the_store_is_written_after_changes_and_not_again_while_nothing_changes(
        mosquitto: MosquittoFactory, edges: list[EdgeBroker], tmp_path: Path, autosave: str) -> None:
    """While the uplink is down the outbox's window of faces waits in the queue, unchanged. On a clock
    Mosquitto rewrites the whole store at every interval anyway; with persistence.autosaveAfterChanges it
    writes it as it fills and then not again. A power cut (Mosquitto killed outright) keeps what the last
    save held."""
    cloud = mosquitto("cloud")
    persistence = ({"autosaveAfterChanges": 100} if autosave == "changes"
                   else {"autosaveAfterChanges": 0, "autosaveIntervalSeconds": 1})
    edge = start_edge(edges, tmp_path / "edge", bridge_to(cloud), extra={"persistence": persistence})
    assert edge.wait_bridge_state("1"), edge.log_tail()
    received, sub = cloud_consumer(cloud, f"cloud-processor-{autosave}")
    cloud.stop()
    pub = edge_client(edge, "detector")
    faces = [sample_face(device="jetson-test", size=10_000, frame=i) for i in range(250)]
    publish_all(pub, faces)
    pub.stop()
    if autosave == "clock":
        written = saves(edge)
        assert wait_until(lambda: saves(edge) >= written + 2, 10), edge.log_tail()  # rewritten, unchanged
        sub.stop()
        return
    # 250 faces queued for the bridge, a few retained messages: saved at 100 and 200 changes.
    assert wait_until(lambda: saves(edge) == 2, 10), edge.log_tail()
    assert not wait_until(lambda: saves(edge) > 2, 3), edge.log_tail()  # nothing changes: nothing written
    assert edge.process is not None
    for child in psutil.Process(edge.process.pid).children():
        child.kill()  # Mosquitto, with no chance to save: a power cut
    edge.kill()
    edge.start()
    cloud.start()
    assert received.wait_for(150, timeout=30), f"{len(received.messages)} faces\n{edge.log_tail()}"
    assert not received.wait_for(250, timeout=2)  # the last save held faces 1 to about 200, not all 250
    delivered = [dict(m.user_properties)["face-id"] for m in received.messages]
    assert delivered == [face.face_id for face in faces[:len(delivered)]]
    sub.stop()


def test_bridge_with_tls_and_password(mosquitto: MosquittoFactory, ca: CertificateAuthority,
                                      edges: list[EdgeBroker], tmp_path: Path) -> None:
    cloud = mosquitto("cloud", ca=ca, users={"jetson-test": "bridge-pass-1", "reader": "reader-pass"})
    secret = tmp_path / "bridge-password"
    secret.write_text("bridge-pass-1\n")
    secret.chmod(0o600)
    edge = start_edge(edges, tmp_path / "edge", bridge_to(cloud, username="jetson-test",
                                                          passwordFile=str(secret)))
    assert edge.wait_bridge_state("1"), edge.log_tail()
    conf = edge.conf_path
    assert stat.S_IMODE(conf.stat().st_mode) == 0o600
    assert "remote_password bridge-pass-1" in conf.read_text()
    assert "bridge-pass-1" not in edge.log_text()
    # facecap does the TLS: Mosquitto bridges in plain TCP to the forwarder on loopback.
    assert "address 127.0.0.1:" in conf.read_text()
    assert "bridge_cafile" not in conf.read_text()
    assert f"bridge TLS to {cloud.host}:{cloud.port} established (TLSv1.3)" in edge.log_text()

    received = Collector()
    sub = MqttClient(settings_for(cloud, tls=True, ca_file=str(ca.cert), username="reader",
                                  password="reader-pass"), "cloud-reader-tls", on_message=received)
    sub.start()
    sub.subscribe("faces/#")
    one_face_crosses(edge, received)
    assert "(p5, c0, k120, u'jetson-test')" in cloud.log_text()  # MQTT 5, persistent, keep-alive 120 s
    sub.stop()


@pytest.mark.parametrize("tls_by", ["facecap", "mosquitto"])
def test_bridge_with_client_certificate(mosquitto: MosquittoFactory, ca: CertificateAuthority,
                                        edges: list[EdgeBroker], tmp_path: Path, tls_by: str) -> None:
    cloud = mosquitto("cloud", ca=ca, require_certificate=True)
    device = ca.issue("jetson-test")
    edge = start_edge(edges, tmp_path / "edge", bridge_to(cloud, certFile=str(device.cert),
                                                          keyFile=str(device.key), tlsBy=tls_by))
    assert edge.wait_bridge_state("1"), edge.log_tail()
    received = Collector()
    sub = MqttClient(settings_for(cloud, tls=True, ca_file=str(ca.cert), cert_file=str(device.cert),
                                  key_file=str(device.key)), f"cloud-reader-{tls_by}", on_message=received)
    sub.start()
    sub.subscribe("faces/#")
    one_face_crosses(edge, received)
    conf = edge.conf_path.read_text()
    if tls_by == "mosquitto":
        assert f"bridge_certfile {device.cert}" in conf
        assert f"address {cloud.host}:{cloud.port}" in conf
    else:
        assert "bridge_certfile" not in conf
        assert "address 127.0.0.1:" in conf
    sub.stop()


def test_a_device_certificate_near_its_end_is_warned_about_and_still_bridges(
        mosquitto: MosquittoFactory, ca: CertificateAuthority, edges: list[EdgeBroker], tmp_path: Path) -> None:
    cloud = mosquitto("cloud", ca=ca, require_certificate=True)
    device = ca.issue("jetson-test", days=10)
    edge = start_edge(edges, tmp_path / "edge", bridge_to(cloud, certFile=str(device.cert), keyFile=str(device.key),
                                                          tlsBy="mosquitto", certificateWarningDays=14))
    assert edge.wait_bridge_state("1"), edge.log_tail()
    assert (f"WARNING facecap.broker.certlife: bridge.certFile {device.cert}: this device's certificate "
            "(CN=jetson-test, expires on ") in edge.log_text()
    assert "in 10 days): the cloud broker refuses the bridge from then" in edge.log_text()


def test_an_expired_device_certificate_is_an_error_and_the_edge_keeps_serving(
        mosquitto: MosquittoFactory, ca: CertificateAuthority, edges: list[EdgeBroker], tmp_path: Path) -> None:
    cloud = mosquitto("cloud", ca=ca, require_certificate=True)
    device = ca.issue("jetson-test", days=-1)
    edge = start_edge(edges, tmp_path / "edge", bridge_to(cloud, certFile=str(device.cert),
                                                          keyFile=str(device.key)))
    assert edge.wait_for_log(f"ERROR facecap.broker.certlife: bridge.certFile {device.cert}: this device's "
                             "certificate (CN=jetson-test, expired on "), edge.log_tail()
    assert edge.wait_for_log(f"bridge TLS to {cloud.host}:{cloud.port}: connection broken: sslv3 alert "
                             "certificate expired"), edge.log_tail()
    assert edge.bridge_state() == "0"
    assert edge.answers()  # the local side (faces into the logger and the outboxes) goes on
    assert edge.process is not None and edge.process.poll() is None


@pytest.mark.parametrize("tls_by", ["facecap", "mosquitto"])
def test_an_expired_certificate_replaced_on_disk_bridges_again_without_a_restart(
        mosquitto: MosquittoFactory, ca: CertificateAuthority, edges: list[EdgeBroker], tmp_path: Path,
        tls_by: str) -> None:
    """The rotation of cloud/README.md done late, the way a fleet is updated: new files copied over the old
    ones, the key first, and no restart. facecap's forwarder (tlsfiles.py) and Mosquitto's own TLS both load
    the files again at the bridge's next attempt."""
    cloud = mosquitto("cloud", ca=ca, require_certificate=True)
    expired = ca.issue("jetson-test", days=-1)
    cert, key = tmp_path / "device" / "client.crt", tmp_path / "device" / "client.key"
    cert.parent.mkdir()
    cert.write_bytes(expired.cert.read_bytes())
    key.write_bytes(expired.key.read_bytes())
    renewed = ca.issue("jetson-test")  # add-device.sh --force: the same id, a new key and certificate
    edge = start_edge(edges, tmp_path / "edge", bridge_to(cloud, certFile=str(cert), keyFile=str(key), tlsBy=tls_by))
    # Mosquitto's own TLS logs the cloud's refusal only as a protocol error of its bridge ("Error creating
    # bridge: Protocol error." or "Client local.<id> disconnected: Protocol error.", as the timing falls).
    refused = "connection broken: sslv3 alert certificate expired" if tls_by == "facecap" else "Protocol error."
    assert edge.wait_for_log(refused), edge.log_tail()

    key.write_bytes(renewed.key.read_bytes())  # half copied: this key does not go with the old certificate
    half_copied = ("WARNING facecap.broker.tlsfiles: the bridge's TLS files changed but do not load "
                   f"(bridge.certFile: cannot load {cert} with {key}: key values mismatch)") if tls_by == "facecap" \
        else "key values mismatch"
    assert edge.wait_for_log(half_copied, timeout=30), edge.log_tail()
    cert.write_bytes(renewed.cert.read_bytes())
    # Up again: the cloud refuses the expired certificate, so the bridge presents the renewed one.
    assert edge.wait_bridge_state("1", timeout=30), edge.log_tail()
    if tls_by == "facecap":
        assert "INFO facecap.broker.tlsfiles: the bridge's TLS files changed" in edge.log_text()
        assert "(this device's certificate: CN=jetson-test, expires on " in edge.log_text()
        assert "ERROR" not in edge.log_text().split("loaded again")[1]
    received, sub = cloud_consumer(cloud, f"cloud-reader-renewed-{tls_by}", tls=True, ca_file=str(ca.cert),
                                   cert_file=str(renewed.cert), key_file=str(renewed.key))
    one_face_crosses(edge, received)
    sub.stop()


def test_largest_face_crosses_and_a_larger_one_is_refused_at_the_edge(
        mosquitto: MosquittoFactory, edges: list[EdgeBroker], tmp_path: Path) -> None:
    """The edge limit is the contract's payload limit and the cloud allows that payload plus room for the
    properties (cloud/mosquitto/mosquitto.conf): the largest face crosses, and a larger one is refused
    where the publisher hears of it, instead of vanishing at the bridge."""
    cloud, edge = bridged_edge(mosquitto, edges, tmp_path, extra="max_packet_size 1114112")
    received = Collector()
    sub = MqttClient(settings_for(cloud), "cloud-reader-size", on_message=received)
    sub.start()
    sub.subscribe("faces/#")
    pub = edge_client(edge, "detector")
    largest = sample_face(device="jetson-test", size=DEFAULT_MAX_PAYLOAD_BYTES)
    publish_all(pub, [largest])
    too_large = pub.publish(largest.topic, fake_jpeg(DEFAULT_MAX_PAYLOAD_BYTES + 1))
    assert too_large is not None
    with pytest.raises(PublishError):
        too_large.result(timeout=10)
    assert received.wait_for(1), edge.log_tail()
    assert received.messages[0].payload == largest.payload
    time.sleep(1)
    assert len(received.messages) == 1
    pub.stop()
    sub.stop()


def test_bridge_lives_within_the_cloud_brokers_acl(mosquitto: MosquittoFactory, edges: list[EdgeBroker],
                                                   tmp_path: Path) -> None:
    """With the cloud broker's own ACLs (cloud/mosquitto/acl for devices, whose user name is the device id,
    and processor.acl) the bridge delivers its device's faces and announces its state on the cloud, and the
    state turns to 0 when the edge goes. (The certificate identity is tested in tests/test_cloud_broker.py.)"""
    acl = "\n".join((REPO / "cloud" / "mosquitto" / name).read_text() for name in ("acl", "processor.acl"))
    acl += "\nuser reader\ntopic read $SYS/broker/connection/#\n"
    cloud = mosquitto("cloud", users={"jetson-test": "device-pass", "processor": "proc-pass",
                                      "reader": "reader-pass"}, acl=acl)
    secret = tmp_path / "bridge-password"
    secret.write_text("device-pass\n")
    edge = start_edge(edges, tmp_path / "edge", bridge_to(cloud, username="jetson-test", passwordFile=str(secret)))
    assert edge.wait_bridge_state("1"), edge.log_tail()
    faces = Collector()
    processor = MqttClient(settings_for(cloud, username="processor", password="proc-pass"), "acl-processor",
                           on_message=faces)
    processor.start()
    processor.subscribe("faces/#")
    states = Collector()
    reader = MqttClient(settings_for(cloud, username="reader", password="reader-pass"), "acl-reader",
                        on_message=states)
    reader.start()
    reader.subscribe("$SYS/broker/connection/+/state")
    pub = edge_client(edge, "detector")
    face = sample_face(device="jetson-test")
    publish_all(pub, [face])
    pub.stop()
    assert faces.wait_for(1), edge.log_tail()
    assert dict(faces.messages[0].user_properties)["face-id"] == face.face_id
    assert states.wait_for(1)
    assert (states.messages[0].topic, states.messages[0].payload) == (edge.state_topic, b"1")
    edge.stop()
    assert states.wait_for(2), "the cloud never heard that the edge went away"
    assert states.messages[-1].payload == b"0"
    processor.stop()
    reader.stop()


def test_wrong_password_is_refused_and_the_log_says_why(mosquitto: MosquittoFactory, ca: CertificateAuthority,
                                                        edges: list[EdgeBroker], tmp_path: Path) -> None:
    cloud = mosquitto("cloud", ca=ca, users={"jetson-test": "right"})
    secret = tmp_path / "bridge-password"
    secret.write_text("wrong\n")
    edge = start_edge(edges, tmp_path / "edge", bridge_to(cloud, username="jetson-test",
                                                          passwordFile=str(secret)))
    assert edge.wait_for_log("Connection Refused: Not authorized"), edge.log_tail()
    assert edge.wait_for_log("Connecting bridge", timeout=1)
    assert edge.bridge_state() == "0"
    assert "New client connected" not in cloud.log_text()
    assert edge.process is not None and edge.process.poll() is None  # keeps retrying, does not exit


def test_wrong_ca_is_refused_and_the_log_says_why(mosquitto: MosquittoFactory, ca: CertificateAuthority,
                                                  edges: list[EdgeBroker], tmp_path: Path) -> None:
    cloud = mosquitto("cloud", ca=ca)
    stranger = CertificateAuthority(tmp_path / "other-ca", name="not-the-cloud-ca")
    edge = start_edge(edges, tmp_path / "edge", bridge_to(cloud, caFile=str(stranger.cert)))
    # The forwarder writes why into the same component log, once, however often Mosquitto retries.
    reason = (f"WARNING facecap.broker.tlsforward: bridge TLS to {cloud.host}:{cloud.port}: connection failed: "
              "certificate verify failed: self-signed certificate in certificate chain")
    assert edge.wait_for_log(reason), edge.log_tail()
    assert wait_until(lambda: edge.log_text().count("Connecting bridge (step 1)") >= 3, 20), edge.log_tail()
    assert edge.log_text().count("certificate verify failed") == 1
    assert edge.bridge_state() == "0"
    assert "New client connected" not in cloud.log_text()
    assert edge.process is not None and edge.process.poll() is None


def test_incomplete_configuration_stops_before_mosquitto_starts(tmp_path: Path) -> None:
    config = {"deviceId": "jetson-test", "local": {"port": 1},
              "bridge": {"host": "mqtt.example.com", "tls": False, "caFile": str(tmp_path / "ca.pem")}}
    result = subprocess.run([sys.executable, "-m", "facecap.cli", "broker", "--config", json.dumps(config)],
                            cwd=tmp_path, capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 2
    assert result.stderr.startswith("facecap broker: bridge.tls: TLS is off towards mqtt.example.com")
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "mosquitto.conf").exists()
    # Without a cloud host the broker would run local-only (with a warning) rather than refuse to start.
    config["bridge"] = {"tls": True}
    result = subprocess.run([sys.executable, "-m", "facecap.cli", "broker", "render", "--config",
                             json.dumps(config)], cwd=tmp_path, capture_output=True, text=True, timeout=30,
                            check=False)
    assert "bridge.host is empty: the broker would run local-only" in result.stderr
    assert "connection cloud" not in result.stdout


def test_local_port_already_in_use(tmp_path: Path) -> None:
    require_binary("mosquitto", "apt-get install mosquitto")
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        config = load_config(BrokerConfig, "broker",
                             {"bridge": {"enabled": False}, "local": {"port": port, "tcp": True}}, env={})
        with pytest.raises(ConfigError) as caught:
            preflight(config, tmp_path)
        assert dict(caught.value.problems) == {
            "local.port": f"127.0.0.1:{port} is already in use; if it is the mosquitto system service that the "
                          "Debian package starts, stop it: sudo systemctl disable --now mosquitto"}
        preflight(config, tmp_path, starting=False)  # as `broker render` beside a running broker does
    preflight(config, tmp_path)


def test_render_prints_the_conf_with_the_password_masked(tmp_path: Path, ca: CertificateAuthority) -> None:
    require_binary("mosquitto", "apt-get install mosquitto")
    secret = tmp_path / "pw"
    secret.write_text("do-not-print-me\n")
    config = {"deviceId": "jetson-test", "bridge": {"host": "mqtt.example.com", "caFile": str(ca.cert),
                                                    "username": "jetson-test", "passwordFile": str(secret)}}
    result = subprocess.run([sys.executable, "-m", "facecap.cli", "broker", "render", "--config",
                             json.dumps(config)], cwd=tmp_path, capture_output=True, text=True, timeout=30,
                            check=False)
    assert result.returncode == 0, result.stderr
    assert "remote_password ********" in result.stdout
    assert "do-not-print-me" not in result.stdout + result.stderr
    assert f"persistence_location {tmp_path.resolve()}/" in result.stdout
    assert not (tmp_path / "mosquitto.conf").exists()  # render writes nothing


def test_sigint_and_sigterm_pass_through(edges: list[EdgeBroker], tmp_path: Path) -> None:
    edge = start_edge(edges, tmp_path / "edge", {"enabled": False})
    assert edge.process is not None
    edge.process.send_signal(2)  # SIGINT, as Ctrl-C in a terminal
    assert edge.process.wait(timeout=15) == 0
    assert "terminating" in edge.log_text()  # Mosquitto got the signal and shut down by itself
    assert "mosquitto stopped" in edge.log_text()
