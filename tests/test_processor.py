"""Acceptance of the processor: a real Mosquitto, a real S3 server (SeaweedFS), the real `facecap processor`.

Every test counts lost faces (published, never stored) and duplicate objects (more than one object for a
face, or an object no face explains) and prints both.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from facecap.config import deep_merge, load_config
from facecap.contract import FaceMetadata, OutgoingFace, build_message, parse_message
from facecap.devkit.servers import MosquittoServer, S3Server
from facecap.mqtt import MqttClient, ReceivedMessage
from facecap.polling import wait_until
from facecap.processor.config import ProcessorConfig
from facecap.processor.plan import plan_message
from facecap.processor.runner import ProcessorRunner
from facecap.storage import face_key
from facecap.storage.files import FileStore
from facecap.storage.keys import join_key
from facecap.storage.s3 import s3_metadata
from facecap.storage.s3crt import CrtS3Store

from .conftest import MosquittoFactory
from .support.helpers import Collector, fake_jpeg, sample_face, settings_for, subscriber
from .support.processor import running
from .support.s3 import s3_with_bucket

pytestmark = pytest.mark.integration

BUCKET = "facecap-faces"
PREFIX = "store"


# --- helpers ---------------------------------------------------------------------------------------------

@pytest.fixture
def s3(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> Any:
    return s3_with_bucket(s3_server, monkeypatch, BUCKET)


def make_config(broker: MosquittoServer, tmp_path: Path, store: str = f"s3://{BUCKET}/{PREFIX}",
                **overrides: Any) -> ProcessorConfig:
    data: dict[str, Any] = {
        "mqtt": {"host": broker.host, "port": broker.port, "minReconnectDelaySeconds": 0.2,
                 "maxReconnectDelaySeconds": 1.0, "connectTimeoutSeconds": 5},
        "store": store,
        "retry": {"initialDelaySeconds": 0.2, "maxDelaySeconds": 2.0},
        "heartbeatFile": str(tmp_path / "processor.heartbeat"),
        "heartbeatIntervalSeconds": 0.5,
        "statsIntervalSeconds": 5,
        "drainTimeoutSeconds": 10,
        # These tests drain backlogs of 5 devices as fast as the processor stores, which a fast store
        # takes past the per-device ceiling (50 faces/s); the ceiling has its own tests
        # (test_processor_guard.py, security/test_limits.py).
        "maxFacesPerSecondPerDevice": 0,
    }
    return load_config(ProcessorConfig, "processor", deep_merge(data, overrides), env={})


def publish(broker: MosquittoServer, faces: Sequence[OutgoingFace], per_second: float | None = None) -> None:
    """Publish QoS 1 with many in flight, optionally paced, and wait until the broker has every one."""
    client = MqttClient(settings_for(broker, max_in_flight=64), f"publisher-{time.monotonic_ns()}")
    client.start()
    started = time.monotonic()
    futures = []
    for index, face in enumerate(faces):
        if per_second:
            time.sleep(max(0.0, started + index / per_second - time.monotonic()))
        future = client.publish(face.topic, face.payload, content_type=face.content_type,
                                user_properties=face.user_properties, timeout=60)
        assert future is not None
        futures.append(future)
    for future in futures:
        future.result(timeout=60)
    client.stop()


def publish_in_background(broker: MosquittoServer, faces: Sequence[OutgoingFace],
                          per_second: float | None = None) -> threading.Thread:
    thread = threading.Thread(target=publish, args=(broker, faces, per_second), daemon=True)
    thread.start()
    return thread


def make_faces(count: int, size: int = 30_000, devices: int = 5) -> list[OutgoingFace]:
    return [sample_face(device=f"jetson-{i % devices}", camera=f"cam{i % 2}", size=size, frame=i)
            for i in range(count)]


def expected_key(face: OutgoingFace, prefix: str = PREFIX) -> str:
    parsed = parse_message(face.topic, face.payload, face.content_type, face.user_properties)
    return join_key(prefix, face_key(parsed))


def s3_keys(client: Any, prefix: str) -> list[str]:
    keys: list[str] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
        keys += [item["Key"] for item in page.get("Contents", [])]
    return keys


def face_keys(client: Any) -> list[str]:
    """Stored faces: everything under the store prefix except the quarantine."""
    return [k for k in s3_keys(client, f"{PREFIX}/") if not k.startswith(f"{PREFIX}/quarantine/")]


def lost_and_duplicates(keys: Sequence[str], faces: Sequence[OutgoingFace]) -> tuple[int, int]:
    expected = {expected_key(face) for face in faces}
    lost = len(expected - set(keys))
    per_face = Counter(key.rsplit("_", 1)[-1] for key in keys)  # "<face-id>.jpg"
    duplicates = sum(n - 1 for n in per_face.values()) + len(set(keys) - expected)
    print(f"faces published {len(faces)}, objects {len(keys)}: lost {lost}, duplicates {duplicates}")
    return lost, duplicates


# --- acceptance ------------------------------------------------------------------------------------------

def test_thousand_faces_make_exactly_thousand_objects(broker: MosquittoServer, s3: Any, tmp_path: Path) -> None:
    faces = make_faces(1000)
    with running(make_config(broker, tmp_path)) as processor:
        publish(broker, faces)
        assert wait_until(lambda: processor.stats.stored >= 1000, 60), processor.stats.summary(processor.pending)
        assert processor.stats.quarantined == 0
    keys = face_keys(s3)
    assert lost_and_duplicates(keys, faces) == (0, 0)
    assert len(keys) == 1000

    def check(face: OutgoingFace) -> None:
        obj = s3.get_object(Bucket=BUCKET, Key=expected_key(face))
        assert obj["Body"].read() == face.payload
        assert obj["ContentType"] == "image/jpeg"
        assert obj["ServerSideEncryption"] == "AES256"
        received = ReceivedMessage(face.topic, face.payload, face.content_type, face.user_properties, qos=1,
                                   retain=False)
        (put,) = plan_message(received, topic_prefix="faces", max_payload_bytes=1 << 20,
                              quarantine_prefix="quarantine", received_at=datetime.now(timezone.utc)).puts
        assert obj["Metadata"] == s3_metadata(put.metadata)
        properties = dict(face.user_properties)
        for name in ("face-id", "device-id", "camera-id", "captured-at", "bbox", "sha256", "track-id"):
            assert obj["Metadata"][name] == properties[name]

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(check, faces))


def test_every_message_twice_still_one_object_per_face(broker: MosquittoServer, s3: Any, tmp_path: Path) -> None:
    faces = make_faces(300)
    with running(make_config(broker, tmp_path)) as processor:
        publish(broker, [face for face in faces for _ in range(2)])
        # A second copy that comes while the first is in hand is acknowledged with it (counted as a copy);
        # one that comes after is stored again, over the same key.
        assert wait_until(lambda: processor.stats.stored + processor.stats.copies >= 600, 60), \
            processor.stats.summary(processor.pending)
        assert processor.stats.stored >= 300
    keys = face_keys(s3)
    assert lost_and_duplicates(keys, faces) == (0, 0)
    assert len(keys) == 300


def test_awscrt_store_runs_on_the_mqtt_event_loop_with_at_most_workers_puts_at_once(
        broker: MosquittoServer, s3: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With the awscrt store the processor has no worker threads: a face is received, stored and
    acknowledged on the one event-loop thread the MQTT client and the S3 client share, and the store
    holds at most `workers` puts at a time while the rest of the receive window waits its turn."""
    threads: dict[str, set[int]] = {"handle": set(), "stored": set()}
    in_store, most = [0], [0]
    lock = threading.Lock()
    original_handle, original_start_put = ProcessorRunner.handle, CrtS3Store.start_put

    def handle(self: ProcessorRunner, message: ReceivedMessage) -> None:
        threads["handle"].add(threading.get_ident())
        original_handle(self, message)

    def start_put(self: CrtS3Store, *args: Any) -> None:
        *put, done = args

        def counted(error: Any) -> None:
            threads["stored"].add(threading.get_ident())
            with lock:
                in_store[0] -= 1
            done(error)

        with lock:
            in_store[0] += 1
            most[0] = max(most[0], in_store[0])
        key, body, content_type, metadata = put
        original_start_put(self, key, body, content_type, metadata, counted)

    monkeypatch.setattr(ProcessorRunner, "handle", handle)
    monkeypatch.setattr(CrtS3Store, "start_put", start_put)
    faces = make_faces(300)
    config = make_config(broker, tmp_path, workers=4)
    with running(config):
        pass  # subscribed: from now on the broker keeps the faces for the processor's session
    publish(broker, faces)  # a backlog: the whole receive window arrives at once
    with running(config) as processor:
        assert wait_until(lambda: processor.stats.stored >= 300, 60), processor.stats.summary(processor.pending)
        workers = [t.name for t in threading.enumerate() if t.name.startswith("mqtt-dispatch")]
    assert most[0] == 4, f"at most 4 puts in the store at once, and 4 with a backlog (saw {most[0]})"
    assert len(threads["handle"]) == 1 and threads["handle"] == threads["stored"], threads
    assert workers == []
    assert lost_and_duplicates(face_keys(s3), faces) == (0, 0)


def test_a_stop_while_s3_hangs_keeps_to_the_drain_timeout(broker: MosquittoServer, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """S3 (or a proxy) takes the requests and never answers. Docker kills the container a few seconds
    after drainTimeoutSeconds, so the stop must not wait for the puts' own 30 s timeout: they are
    cancelled, and their faces stay unacknowledged for the next session."""
    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []

    def hold() -> None:
        with suppress(OSError):
            while True:
                held.append(listener.accept()[0])

    threading.Thread(target=hold, daemon=True).start()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "hang-test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "hang-test-secret")
    environ = {"AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{listener.getsockname()[1]}", "AWS_REGION": "eu-west-1"}
    processor = ProcessorRunner(make_config(broker, tmp_path, workers=4), CrtS3Store(BUCKET, "hang", environ=environ))
    processor.start()
    try:
        assert processor.wait_ready(15)
        publish(broker, make_faces(12, size=2000))
        assert wait_until(lambda: len(held) >= 4 and processor.pending == 12, 20), processor.pending
        started = time.monotonic()
        assert processor.stop(drain_timeout=0.5) is False
        took = time.monotonic() - started
    finally:
        listener.close()
        for connection in held:
            connection.close()
    assert processor.stats.stored == 0 and processor.pending == 0
    assert took < 6, f"the stop took {took:.1f} s"


def test_s3_down_mid_stream_loses_nothing(broker: MosquittoServer, s3: Any, s3_server: S3Server,
                                          tmp_path: Path) -> None:
    faces = make_faces(600)
    before, during = faces[:300], faces[300:]
    with running(make_config(broker, tmp_path)) as processor:
        stream = publish_in_background(broker, before, per_second=20)
        assert wait_until(lambda: processor.stats.stored >= 60, 30)
        s3_server.stop()
        time.sleep(0.5)  # a put that finished just before the stop is counted after its PUBACK
        stopped_at, failed_before = processor.stats.stored, processor.stats.store_failures
        workers, window = processor.config.workers, processor.config.receive_maximum
        # The outage lasts until the processor is at its worst: its receive window is full (the broker
        # queues the rest of the stream) and every worker has retried through the backoff to its ceiling.
        # How long that takes depends on how long awscrt spends on each refused connection, so the
        # second half of the stream is published only then: faces keep arriving during the outage
        # however slow the machine is.
        assert wait_until(lambda: processor.pending >= window
                          and processor.stats.store_failures >= failed_before + 5 * workers, 60), \
            processor.stats.summary(processor.pending)
        publish(broker, during, per_second=100)  # returns once the broker has every one
        assert processor.stats.stored == stopped_at, "stored while the S3 server was down?"
        assert processor.stats.store_failures > 0
        s3_server.start()
        stream.join(60)
        assert wait_until(lambda: processor.stats.stored >= 600, 60), processor.stats.summary(processor.pending)
        print(f"stored {stopped_at} before the outage; {processor.stats.store_failures} failed attempts during it")
    keys = face_keys(s3)
    assert lost_and_duplicates(keys, faces) == (0, 0)
    assert len(keys) == 600


def _processor_env(broker: MosquittoServer, s3_server: S3Server, heartbeat: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FACECAP_", "AWS_"))}
    env.update(s3_server.env())
    env.update({
        "FACECAP_STORE": f"s3://{BUCKET}/{PREFIX}",
        "FACECAP_MQTT__HOST": broker.host,
        "FACECAP_MQTT__PORT": str(broker.port),
        "FACECAP_HEARTBEAT_FILE": str(heartbeat),
        "FACECAP_HEARTBEAT_INTERVAL_SECONDS": "0.3",
        "FACECAP_STATS_INTERVAL_SECONDS": "2",
        "FACECAP_RETRY__INITIAL_DELAY_SECONDS": "0.2",
        "FACECAP_RETRY__MAX_DELAY_SECONDS": "2",
    })
    return env


def _start_processor(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        process = subprocess.Popen([sys.executable, "-m", "facecap.cli", "processor"], env=env,
                                   stdout=out, stderr=subprocess.STDOUT)
    heartbeat = Path(env["FACECAP_HEARTBEAT_FILE"])

    def subscribed() -> bool:
        assert process.poll() is None, log.read_text()
        try:
            return bool(json.loads(heartbeat.read_text()).get("subscribed"))
        except (OSError, ValueError):
            return False

    assert wait_until(subscribed, 30, 0.1), log.read_text()
    return process


def test_processor_killed_then_terminated_mid_stream_loses_nothing(
        broker: MosquittoServer, s3: Any, s3_server: S3Server, tmp_path: Path) -> None:
    """Run 1 dies by SIGKILL, run 2 stops by SIGTERM (drains, exits 0), run 3 finishes: every face once."""
    faces = make_faces(900)
    heartbeat = tmp_path / "hb"
    log = tmp_path / "processor.log"
    env = _processor_env(broker, s3_server, heartbeat)
    first = _start_processor(env, log)
    stream = publish_in_background(broker, faces, per_second=100)  # ~9 s of traffic
    assert wait_until(lambda: len(face_keys(s3)) >= 150, 30)
    first.kill()
    first.wait()
    killed_at = len(face_keys(s3))
    assert stream.is_alive() and killed_at < 900
    heartbeat.unlink(missing_ok=True)  # a dead process leaves it behind; the next run writes its own

    second = _start_processor(env, log)
    health = subprocess.run([sys.executable, "-m", "facecap.cli", "processor", "healthcheck", "--file",
                             str(heartbeat), "--max-age", "5"], capture_output=True, text=True, check=False)
    assert health.returncode == 0, health.stderr
    assert wait_until(lambda: len(face_keys(s3)) >= killed_at + 150, 30)
    second.send_signal(signal.SIGTERM)
    assert second.wait(30) == 0
    terminated_at = len(face_keys(s3))
    assert "SIGTERM received: draining" in log.read_text()
    assert not heartbeat.exists(), "a stopped processor must not look healthy"

    third = _start_processor(env, log)
    stream.join(60)
    assert wait_until(lambda: len(face_keys(s3)) >= 900, 60), log.read_text()[-3000:]
    time.sleep(1)  # anything still redelivered would show up as an extra object now
    third.send_signal(signal.SIGTERM)
    assert third.wait(30) == 0
    print(f"SIGKILL after {killed_at} objects, SIGTERM after {terminated_at}")
    keys = face_keys(s3)
    assert lost_and_duplicates(keys, faces) == (0, 0)
    assert len(keys) == 900


def test_bad_messages_go_to_quarantine_and_processing_continues(broker: MosquittoServer, s3: Any,
                                                                tmp_path: Path) -> None:
    good = sample_face(device="dev-ok")
    wrong_hash = sample_face(device="dev-ok")
    oversized = sample_face(device="dev-ok", size=60_000)
    bad: list[tuple[str, str, bytes, str | None, tuple[tuple[str, str], ...]]] = [
        ("not-an-image", "faces/dev-1/cam0", b"GIF89a definitely not a face", None, ()),
        ("too-large", oversized.topic, oversized.payload, oversized.content_type, oversized.user_properties),
        ("sha256-mismatch", wrong_hash.topic, wrong_hash.payload[:-1] + b"\x00", wrong_hash.content_type,
         wrong_hash.user_properties),
        ("bad-device-id", "faces/../x", fake_jpeg(1000), "image/jpeg", ()),
        ("bad-device-id", "faces/..%2F/cam0", fake_jpeg(1000), "image/jpeg", ()),
    ]
    config = make_config(broker, tmp_path, maxPayloadBytes=50_000)
    with running(config) as processor:
        client = MqttClient(settings_for(broker), "bad-publisher")
        client.start()
        for _, topic, payload, content_type, props in bad:
            future = client.publish(topic, payload, content_type=content_type, user_properties=props)
            assert future is not None
            future.result(10)
        client.stop()
        publish(broker, [good])
        assert wait_until(lambda: processor.stats.quarantined >= 5 and processor.stats.stored >= 1, 20)
        assert processor.client.connected  # still running, still subscribed
        after = sample_face(device="dev-ok", frame=2)
        publish(broker, [after])
        assert wait_until(lambda: processor.stats.stored >= 2, 20)

    assert sorted(face_keys(s3)) == sorted([expected_key(good), expected_key(after)])
    quarantined = s3_keys(s3, f"{PREFIX}/quarantine/")
    assert len(quarantined) == 2 * len(bad)  # a payload and a JSON record each
    for reason, topic, payload, _, _ in bad:
        records = [k for k in quarantined if f"/{reason}/" in k and k.endswith(".json")]
        matching = [json.loads(s3.get_object(Bucket=BUCKET, Key=k)["Body"].read()) for k in records]
        (record,) = [r for r in matching if r["topic"] == topic]
        assert record["reason"] == reason and record["detail"]
        data = s3.get_object(Bucket=BUCKET, Key=f"{PREFIX}/{record['payloadKey']}")
        assert data["Body"].read() == payload
        assert data["Metadata"]["quarantine-reason"] == reason
        assert data["Metadata"]["topic"] == topic
    print(f"quarantined {len(bad)} bad messages with reasons {sorted({b[0] for b in bad})}; 0 lost")


def test_a_face_stamped_before_the_devices_clock_was_set_is_kept_and_the_device_named(
        broker: MosquittoServer, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="facecap.processor")
    root = tmp_path / "faces"
    booted = datetime(2019, 3, 1, 8, 0, tzinfo=timezone.utc)  # the image's build date, before NTP
    face = build_message(fake_jpeg(2000), FaceMetadata(device_id="jetson-rtc", camera_id="cam0", captured_at=booted,
                                                       bbox=(1, 2, 30, 40), score=0.9), topic_prefix="faces")
    with running(make_config(broker, tmp_path, store=f"file://{root}")) as processor:
        publish(broker, [face])
        assert wait_until(lambda: processor.stats.stored >= 1, 20)
    assert [p.relative_to(root).parts[:5] for p in root.rglob("*.jpg")] == [("jetson-rtc", "2019", "03", "01", "08")]
    assert "device jetson-rtc's clock is wrong: a face captured at 2019-03-01T08:00:00+00:00" in caplog.text


# --- operation -------------------------------------------------------------------------------------------

def test_shared_subscription_splits_the_load_into_a_folder(mosquitto: MosquittoFactory, tmp_path: Path,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="facecap.processor")
    broker = mosquitto()
    root = tmp_path / "faces"
    faces = make_faces(300, size=5000)
    config_a = make_config(broker, tmp_path / "a", store=f"file://{root}", shareGroup="facecap-test-group",
                           mqtt={"clientId": "facecap-a"})
    config_b = make_config(broker, tmp_path / "b", store=f"file://{root}", shareGroup="facecap-test-group",
                           mqtt={"clientId": "facecap-b"})
    with running(config_a) as first, running(config_b) as second:
        publish(broker, faces)
        assert wait_until(lambda: first.stats.stored + second.stats.stored >= 300, 30)
        print(f"split: {first.stats.stored} + {second.stats.stored}")
        assert first.stats.stored > 0 and second.stats.stored > 0
    # The group is a secret (a device that knows it can join): the log names the filter without it.
    assert "subscribed to $share/***/faces/#" in caplog.text and "facecap-test-group" not in caplog.text
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*.jpg"))
    assert files == sorted(face_key(parse_message(f.topic, f.payload, f.content_type, f.user_properties))
                           for f in faces)
    sample = faces[0]
    key = face_key(parse_message(sample.topic, sample.payload, sample.content_type, sample.user_properties))
    assert (root / key).read_bytes() == sample.payload
    metadata = FileStore(root).read_metadata(key)
    assert metadata["contentType"] == "image/jpeg"
    assert metadata["metadata"]["face-id"] == sample.face_id  # type: ignore[index]


def test_a_failing_store_never_acknowledges_and_a_later_run_stores_everything(
        broker: MosquittoServer, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the store's folder should be")
    faces = make_faces(40, size=2000)
    broken = make_config(broker, tmp_path, store=f"file://{blocker}/faces", workers=2)
    with running(broken) as processor:
        publish(broker, faces)
        assert wait_until(lambda: processor.stats.store_failures >= 4, 20)
        started = time.monotonic()
        assert processor.stop(drain_timeout=1) is False  # gives up, leaving the faces unacknowledged
        assert time.monotonic() - started < 8
        assert processor.stats.stored == 0
    root = tmp_path / "faces"
    with running(make_config(broker, tmp_path, store=f"file://{root}")) as processor:
        assert wait_until(lambda: processor.stats.stored >= 40, 30), processor.stats.summary(processor.pending)
    assert len(list(root.rglob("*.jpg"))) == 40


@pytest.mark.parametrize("store", ["file", "s3"])
def test_broker_restarts_during_a_store_outage_do_not_pile_up_copies_of_the_same_faces(
        store: str, broker: MosquittoServer, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """Each reconnect makes the broker send the unacknowledged faces again. While the store is down those
    copies used to be stored beside the first ones, payloads and all: a receive window more in hand per
    reconnect, for as long as the outage lasts. Now a copy waits with the one in hand, from the moment it
    arrives, and is acknowledged with it. A blocking store (a folder that cannot be written) and the
    awscrt S3 store (its server stopped), whose failed puts take a while."""
    faces = make_faces(40, size=2000)
    if store == "file":
        blocker = tmp_path / "not-a-folder"
        blocker.write_text("a file where the store's folder should be")
        config = make_config(broker, tmp_path, store=f"file://{blocker}/faces", workers=2)
    else:
        s3_client, s3_server = request.getfixturevalue("s3"), request.getfixturevalue("s3_server")
        s3_server.stop()
        config = make_config(broker, tmp_path, workers=2)
    window = config.receive_maximum
    with running(config) as processor:
        publish(broker, faces)
        assert wait_until(lambda: processor.pending == window and processor.stats.store_failures >= window, 30), \
            processor.stats.summary(processor.pending)
        for restart in range(5):
            received = processor.stats.received
            broker.restart()  # at once: the copies of the last restart may still be in their puts
            assert wait_until(lambda: processor.stats.received >= received + window, 20), \
                f"after restart {restart + 1}: {processor.stats.summary(processor.pending)}"  # noqa: B023
            assert processor.pending <= 2 * window, f"after restart {restart + 1}: " + \
                processor.stats.summary(processor.pending)
        assert processor.stats.superseded >= 4 * window  # each restart drops the copies of the one before
        if store == "file":
            blocker.unlink()  # the store works again
        else:
            s3_server.start()
        assert wait_until(lambda: processor.stats.stored >= 40 and processor.pending == 0, 60), \
            processor.stats.summary(processor.pending)
        # Each face counts once as stored; its copies are counted apart, in the log line and the heartbeat.
        assert processor.stats.stored == 40, processor.stats.summary(processor.pending)
        stats = processor.stats
        assert f"copies acknowledged {stats.copies} and dropped {stats.superseded}" in stats.summary(0)
        assert stats.copies >= window and stats.received == 40 + stats.copies + stats.superseded

        def heartbeat_copies() -> tuple[int, int]:
            state = json.loads(Path(config.heartbeat_file).read_text())
            return state["copiesAcknowledged"], state["copiesDropped"]

        assert wait_until(lambda: heartbeat_copies() == (stats.copies, stats.superseded), 10), heartbeat_copies()
    if store == "file":
        stored = sorted(path.name for path in (blocker / "faces").rglob("*.jpg"))
        assert len(stored) == len(set(stored)) == 40
    else:
        assert lost_and_duplicates(face_keys(s3_client), faces) == (0, 0)


def test_giving_up_on_an_s3_outage_leaves_every_face_for_the_next_run(
        broker: MosquittoServer, s3: Any, s3_server: S3Server, tmp_path: Path) -> None:
    """The S3 store (awscrt) while the server is down: shutdown gives up on the faces that wait for a retry
    and on those still queued for a worker, leaves all of them unacknowledged, and the broker gives every
    one to the next run."""
    faces = make_faces(40, size=2000)
    s3_server.stop()
    try:
        with running(make_config(broker, tmp_path)) as processor:
            publish(broker, faces)
            assert wait_until(lambda: processor.pending == 40 and processor.stats.store_failures >= 80, 30), \
                processor.stats.summary(processor.pending)
            started = time.monotonic()
            assert processor.stop(drain_timeout=1) is False
            assert time.monotonic() - started < 8
            assert (processor.stats.stored, processor.stats.abandoned, processor.pending) == (0, 40, 0)
    finally:
        s3_server.start()
    with running(make_config(broker, tmp_path)) as processor:
        assert wait_until(lambda: processor.stats.stored >= 40, 30), processor.stats.summary(processor.pending)
    assert lost_and_duplicates(face_keys(s3), faces) == (0, 0)


def test_health_and_status_follow_the_broker_connection(mosquitto: MosquittoFactory, tmp_path: Path) -> None:
    from facecap.cli import main

    broker = mosquitto()
    config = make_config(broker, tmp_path, store=f"file://{tmp_path / 'faces'}", heartbeatIntervalSeconds=0.2)
    healthcheck = ["processor", "healthcheck", "--file", config.heartbeat_file, "--max-age", "1.5",
                   "--unhealthy-after", "1.5"]
    statuses = Collector()
    with running(config):
        watcher = subscriber(broker, "facecap/+/processor/status", statuses)
        assert statuses.wait_for(1, 10)
        assert (statuses.messages[0].topic, statuses.messages[0].payload) == (config.status_topic, b"online")
        watcher.stop()
        assert wait_until(lambda: main(healthcheck) == 0, 5)
        broker.stop()
        assert wait_until(lambda: main(healthcheck) == 1, 10)
        broker.start()
        assert wait_until(lambda: main(healthcheck) == 0, 15)
    assert main(healthcheck) == 1  # stopped: no heartbeat

