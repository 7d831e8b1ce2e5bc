"""OutboxPublisher on a real Mosquitto: publish after commit, receipts delete, redelivery waits for the
bridge, resume at start, and a disk that refuses writes."""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import pytest

from facecap.contract import FaceMetadata, OutgoingFace
from facecap.detector.durable import OutboxCommitter
from facecap.detector.publisher import FacePublisher
from facecap.devkit.servers import MosquittoServer
from facecap.mqtt import MqttClient, MqttSettings, ReceivedMessage
from facecap.outbox import Outbox, OutboxPublisher, OutboxSettings, OutboxWriteError, PendingFace
from facecap.outbox.inspect import read_pending
from facecap.outbox.publisher import _FRESH_BYTES
from facecap.receipts import encode_receipt, receipt_topic

from .conftest import MosquittoFactory
from .support.helpers import Collector, sample_face, settings_for, subscriber

pytestmark = pytest.mark.integration

DEVICE = "jetson-1"
STATE_TOPIC = f"$SYS/broker/connection/facecap-edge-{DEVICE}/state"


def wait(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def started(folder: Path, broker: MosquittoServer, **settings: object) -> OutboxPublisher:
    outbox = Outbox(folder, OutboxSettings.model_validate(settings))
    publisher = OutboxPublisher(outbox, settings_for(broker), f"producer-{time.monotonic_ns()}", DEVICE)
    publisher.start()
    assert publisher.wait_subscribed(10)
    return publisher


def cloud_says(broker: MosquittoServer, topic: str, payload: bytes, retain: bool = False) -> None:
    client = MqttClient(settings_for(broker), f"cloud-{time.monotonic_ns()}")
    client.start()
    done = client.publish(topic, payload, retain=retain)
    assert done is not None
    done.result(10)
    client.stop()


def ids_of(collector: Collector) -> list[str]:
    return [dict(m.user_properties)["face-id"] for m in collector.messages]


@contextmanager
def producing(broker: MosquittoServer, folder: Path, bridge_state: bytes,
              **settings: object) -> Iterator[tuple[OutboxPublisher, Collector]]:
    """A started publisher and a subscriber that sees what it publishes, with the bridge state retained as
    given (b"": none at all); afterwards both stop and the retained state is cleared for later tests."""
    cloud_says(broker, STATE_TOPIC, bridge_state, retain=True)
    seen = Collector()
    reader = subscriber(broker, "faces/#", seen)
    publisher = started(folder, broker, **settings)
    try:
        yield publisher, seen
    finally:
        publisher.stop()
        publisher.outbox.close()
        reader.stop()
        cloud_says(broker, STATE_TOPIC, b"", retain=True)


def test_faces_are_published_and_receipts_empty_the_outbox(broker: MosquittoServer, tmp_path: Path) -> None:
    seen = Collector()
    reader = subscriber(broker, "faces/#", seen)
    publisher = started(tmp_path, broker)
    faces = [sample_face(device=DEVICE, size=5000, frame=i) for i in range(50)]
    assert publisher.capture(faces) == [True] * 50
    assert seen.wait_for(50)
    assert sorted(ids_of(seen)) == sorted(f.face_id for f in faces)
    assert seen.messages[0].payload in {f.payload for f in faces}
    cloud_says(broker, receipt_topic(DEVICE), encode_receipt([f.face_id for f in faces[:30]],
                                                             [faces[30].face_id]))
    assert wait(lambda: publisher.outbox.counts().pending == 19)
    assert publisher.outbox.counts().delivered == 31
    cloud_says(broker, receipt_topic("jetson-2"), encode_receipt([f.face_id for f in faces]))  # not ours
    cloud_says(broker, receipt_topic(DEVICE), b"garbage")
    assert wait(lambda: publisher.stats.bad_receipts == 1)
    assert publisher.outbox.counts().pending == 19
    assert "pending 19" in publisher.summary()
    publisher.stop()
    publisher.outbox.close()
    reader.stop()


def test_faces_the_broker_refuses_are_said_and_kept(mosquitto: MosquittoFactory, tmp_path: Path,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    """A deployment that gives the detector another deviceId (or topicPrefix) than the EdgeBroker's: its ACL
    refuses every face. They stay in the outbox, and the log says why instead of only counting them."""
    caplog.set_level(logging.ERROR, "facecap.outbox.publisher")
    broker = mosquitto(users={"detector": "secret-1"}, acl="user detector\ntopic write faces/jetson-other/#\n"
                                                           "topic read facecap/+/receipts\n")
    outbox = Outbox(tmp_path, OutboxSettings())
    publisher = OutboxPublisher(outbox, settings_for(broker, username="detector", password="secret-1"),
                                "producer-refused", DEVICE)
    publisher.start()
    try:
        assert publisher.wait_subscribed(10)
        faces = [sample_face(device=DEVICE, size=5000, frame=i) for i in range(3)]
        assert publisher.capture(faces) == [True] * 3
        assert wait(lambda: publisher.stats.failed == 3)
        errors = [r.getMessage() for r in caplog.records if r.name == "facecap.outbox.publisher"]
        assert len(errors) == 1  # one line for a burst, not one per face
        assert errors[0].startswith("a face was not taken (1 so far; each stays in the outbox and is published "
                                    f"again): broker refused publish to faces/{DEVICE}/cam0: NOT_AUTHORIZED")
        assert errors[0].endswith("The EdgeBroker lets a producer write only <its topicPrefix>/<its deviceId>/# "
                                  "(and only as the detector or sender user), facecap's cloud broker only "
                                  "faces/<the certificate's CN>/#: the producer's deviceId and topicPrefix must "
                                  "match")
        assert [entry.face_id for entry in read_pending(tmp_path)] == [face.face_id for face in faces]
        assert "not taken 3," in publisher.summary()
    finally:
        publisher.stop()
        outbox.close()


def test_redelivery_waits_for_the_bridge_and_a_restart_publishes_everything_again(
        broker: MosquittoServer, tmp_path: Path) -> None:
    cloud_says(broker, STATE_TOPIC, b"0", retain=True)
    seen = Collector()
    reader = subscriber(broker, "faces/#", seen)
    publisher = started(tmp_path, broker, redeliver_after_seconds=0.5)
    assert wait(lambda: publisher.bridge.up is False)
    faces = [sample_face(device=DEVICE, size=1000, frame=i) for i in range(5)]
    publisher.capture(faces)
    assert seen.wait_for(5)
    time.sleep(1.5)  # three redelivery delays: nothing goes out while the bridge is down
    assert len(seen.messages) == 5
    cloud_says(broker, STATE_TOPIC, b"1", retain=True)
    assert seen.wait_for(10, timeout=10), "overdue faces were not published again once the bridge was up"
    assert sorted(ids_of(seen)[5:10]) == sorted(f.face_id for f in faces)
    publisher.stop()
    publisher.outbox.close()

    # A new run (as after a power cut) publishes every pending face at once, whatever the bridge says.
    cloud_says(broker, STATE_TOPIC, b"0", retain=True)
    count = len(seen.messages)
    again = started(tmp_path, broker, redeliver_after_seconds=60)
    assert seen.wait_for(count + 5)
    assert sorted(ids_of(seen)[count:count + 5]) == sorted(f.face_id for f in faces)
    again.stop()
    again.outbox.close()
    reader.stop()


def test_when_the_bridge_comes_back_overdue_faces_wait_for_the_receipts_it_brings(
        broker: MosquittoServer, tmp_path: Path) -> None:
    with producing(broker, tmp_path, b"0", redeliver_after_seconds=2) as (publisher, seen):
        assert wait(lambda: publisher.bridge.up is False)
        faces = [sample_face(device=DEVICE, size=1000, frame=i) for i in range(3)]
        publisher.capture(faces)
        assert seen.wait_for(3)
        time.sleep(2.5)  # overdue now, held only by the bridge being down
        cloud_says(broker, STATE_TOPIC, b"1", retain=True)
        # The bridge is delivering what the edge broker queued meanwhile: their receipts are on the way.
        assert not seen.wait_for(4, timeout=1.0), "overdue faces went out again the moment the bridge came back"
        assert seen.wait_for(6, timeout=10), "the hold after the bridge came back never ended"
        assert sorted(ids_of(seen)[3:6]) == sorted(f.face_id for f in faces)


def test_a_disk_that_refuses_writes_still_lets_faces_out(broker: MosquittoServer, tmp_path: Path) -> None:
    seen = Collector()
    reader = subscriber(broker, "faces/#", seen)
    publisher = started(tmp_path, broker)
    outbox = publisher.outbox
    pages = outbox._conn.execute("PRAGMA page_count").fetchone()[0]
    outbox._conn.execute(f"PRAGMA max_page_count = {pages}")  # the disk is full from now on
    big = [sample_face(device=DEVICE, size=50_000, frame=i) for i in range(3)]
    with pytest.raises(OutboxWriteError, match=str(outbox.path)):
        outbox.capture(big)
    assert outbox.counts().pending == 0
    assert publisher.capture(big) == [True] * 3
    assert seen.wait_for(3)
    assert publisher.stats.unsaved == 3 and "unsaved 3" in publisher.summary()
    outbox._conn.execute("PRAGMA max_page_count = 1073741823")
    assert publisher.capture(big[:1]) == [True] and outbox.counts().pending == 1
    publisher.stop()
    outbox.close()
    reader.stop()


def test_faces_neither_on_disk_nor_in_memory_are_counted_as_lost_not_deferred(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Beyond the in-memory queue a face is left to the redelivery pass, which reads the disk: a face the
    disk refused is not there, so it was silently never sent. It is dropped, counted and logged instead."""
    client = MqttClient(MqttSettings(), "detector")  # never started: the sender is held back
    outbox = Outbox(tmp_path, OutboxSettings())
    durable = OutboxPublisher(outbox, client.settings, client.client_id, DEVICE, client=client)
    pages = outbox._conn.execute("PRAGMA page_count").fetchone()[0]
    outbox._conn.execute(f"PRAGMA max_page_count = {pages}")  # the disk is full from now on
    size = 1_000_000
    faces = [sample_face(device=DEVICE, size=size, frame=i) for i in range(40)]
    for face in faces:
        durable.capture([face])
    kept = _FRESH_BYTES // len(faces[0].payload)  # what the in-memory queue holds
    assert durable.stats.unsaved == 40 and durable.stats.deferred == 0
    assert durable.stats.lost == 40 - kept > 0
    assert "faces dropped so far" in caplog.text and f"lost {durable.stats.lost}" in durable.summary()
    outbox.close()


def test_a_face_the_full_outbox_refuses_is_not_published(broker: MosquittoServer, tmp_path: Path) -> None:
    """whenFull refuse-newest: the refused face is not sent either (it would go out without the outbox's
    guarantee, and uncounted as such)."""
    seen = Collector()
    reader = subscriber(broker, "faces/#", seen)
    publisher = started(tmp_path, broker, max_faces=1, when_full="refuse-newest")
    kept, refused = (sample_face(device=DEVICE, size=500, frame=i) for i in range(2))
    assert publisher.capture([kept, refused]) == [True, False]
    assert seen.wait_for(1)
    time.sleep(0.5)  # the refused face would have followed by now
    assert ids_of(seen) == [kept.face_id]
    publisher.stop()
    publisher.outbox.close()
    reader.stop()


def test_faces_the_disk_refused_are_not_counted_as_committed(tmp_path: Path) -> None:
    """The detector's `committed` means on disk: a face that went out without the outbox is `unsaved`."""
    client = MqttClient(MqttSettings(), "detector")  # never started: nothing here publishes
    outbox = Outbox(tmp_path, OutboxSettings())
    durable = OutboxPublisher(outbox, client.settings, client.client_id, DEVICE, client=client)
    committer = OutboxCommitter(durable, on_done=lambda size: None)
    committer.put(sample_face(device=DEVICE, size=50_000, frame=0), 50_000)
    assert wait(lambda: committer.stats.committed == 1)
    pages = outbox._conn.execute("PRAGMA page_count").fetchone()[0]
    outbox._conn.execute(f"PRAGMA max_page_count = {pages}")  # the disk is full from now on
    for frame in range(1, 4):
        committer.put(sample_face(device=DEVICE, size=50_000, frame=frame), 50_000)
    assert committer.close(10)
    assert durable.stats.unsaved == 3
    assert committer.stats.committed == 1 and outbox.counts().pending == 1
    outbox.close()


class FailingRedelivery(Outbox):
    """The real outbox, whose first redelivery pass raises `error`."""

    error: Exception | None = None

    def take_due(self, limit: int, now: float | None = None, overdue: bool = True,
                 lost: Sequence[str] = ()) -> list[PendingFace]:
        if self.error is not None:
            error, self.error = self.error, None
            raise error
        return super().take_due(limit, now, overdue, lost)


@pytest.mark.parametrize(("error", "logged"), [
    (sqlite3.OperationalError("database or disk is full"), "failed taking overdue faces"),  # a full disk
    (RuntimeError("a bug"), "the outbox sender failed"),
])
def test_an_error_in_a_redelivery_pass_does_not_stop_the_sender(
        broker: MosquittoServer, tmp_path: Path, caplog: pytest.LogCaptureFixture,
        error: Exception, logged: str) -> None:
    earlier = Outbox(tmp_path)
    left = sample_face(device=DEVICE, size=500, frame=100)
    earlier.capture([left])  # pending from an earlier run: due at start
    earlier.close()
    seen = Collector()
    reader = subscriber(broker, "faces/#", seen)
    outbox = FailingRedelivery(tmp_path, OutboxSettings())
    outbox.error = error
    publisher = OutboxPublisher(outbox, settings_for(broker), f"producer-{time.monotonic_ns()}", DEVICE)
    publisher.start()
    assert publisher.wait_subscribed(10)
    fresh = [sample_face(device=DEVICE, size=500, frame=i) for i in range(3)]
    publisher.capture(fresh)
    assert seen.wait_for(4)
    assert sorted(ids_of(seen)[:3]) == sorted(face.face_id for face in fresh)
    assert ids_of(seen)[3] == left.face_id  # once the pass is tried again
    assert publisher.stats.outbox_errors == int(isinstance(error, sqlite3.Error)) and logged in caplog.text
    publisher.stop()
    outbox.close()
    reader.stop()


class ThreadNoting(Outbox):
    """The real outbox, noting which thread commits."""

    committing_threads: set[str]

    def capture(self, faces: Sequence[OutgoingFace]) -> list[bool]:
        self.committing_threads = {*getattr(self, "committing_threads", set()), threading.current_thread().name}
        return super().capture(faces)


def test_the_detector_publisher_commits_off_the_capture_thread_and_before_the_publish(
        broker: MosquittoServer, tmp_path: Path) -> None:
    """FacePublisher with an outbox (the detector's path): submit only queues; a committer thread syncs
    the faces, and each face is already in the outbox file when it reaches the broker."""
    in_outbox_on_arrival: list[bool] = []

    def arrived(message: ReceivedMessage) -> None:
        face_id = dict(message.user_properties)["face-id"]
        in_outbox_on_arrival.append(face_id in {e.face_id for e in read_pending(tmp_path)})

    reader = MqttClient(settings_for(broker), f"reader-{time.monotonic_ns()}", on_message=arrived)
    reader.start()
    reader.subscribe("faces/#")
    client = MqttClient(settings_for(broker), f"detector-{time.monotonic_ns()}")
    outbox = ThreadNoting(tmp_path, OutboxSettings())
    durable = OutboxPublisher(outbox, client.settings, client.client_id, DEVICE, client=client)
    publisher = FacePublisher(client, topic_prefix="faces", max_payload_bytes=100_000, max_queued_bytes=10**7,
                              outbox=durable)
    durable.start()
    assert durable.wait_subscribed(10)
    sample = sample_face(device=DEVICE, size=3000)
    for frame in range(20):
        meta = FaceMetadata(device_id=DEVICE, camera_id="cam0", captured_at=datetime.now(timezone.utc),
                            bbox=(1, 2, 30, 40), score=0.9, frame=frame, track_id="1", detector="yunet")
        assert publisher.submit(sample.payload, meta)
    assert wait(lambda: len(in_outbox_on_arrival) == 20)
    assert all(in_outbox_on_arrival)
    assert outbox.committing_threads == {"outbox-commit"}
    assert publisher.committer is not None and publisher.committer.stats.committed == 20
    assert publisher.close(5)
    assert publisher.stats.queued_bytes == 0
    durable.stop()
    outbox.close()
    reader.stop()


def test_a_backlog_is_published_again_at_the_configured_pace(broker: MosquittoServer, tmp_path: Path) -> None:
    first = started(tmp_path, broker)
    first.capture([sample_face(device=DEVICE, size=500, frame=i) for i in range(60)])
    first.stop()
    first.outbox.close()
    again = started(tmp_path, broker, redeliver_max_per_second=20)
    assert wait(lambda: again.stats.republished >= 20)
    assert again.stats.republished < 60  # the rest follows 20 a second, not in one go
    assert wait(lambda: again.stats.republished == 60)
    again.stop()
    again.outbox.close()


def test_faces_awaiting_receipts_are_bounded_and_the_rest_wait_on_disk(
        broker: MosquittoServer, tmp_path: Path) -> None:
    """A dead uplink: the edge broker gets maxUnconfirmed faces, not the whole backlog; each receipt lets
    as many more out, and once the bridge is up, faces whose receipt got lost leave the window on their own."""
    with producing(broker, tmp_path, b"0", max_unconfirmed=10, redeliver_after_seconds=1.0) as (publisher, seen):
        assert wait(lambda: publisher.bridge.up is False)
        faces = [sample_face(device=DEVICE, size=1000, frame=i) for i in range(40)]
        publisher.capture(faces)
        assert seen.wait_for(10)
        time.sleep(1.5)  # past the expiry: while the bridge is down nothing leaves the window
        assert len(seen.messages) == 10
        assert len(publisher.window) == 10
        assert publisher.outbox.counts().pending == 40  # the other 30 wait in the outbox

        first = ids_of(seen)
        assert first == [f.face_id for f in faces[:10]]  # in capture order
        cloud_says(broker, receipt_topic(DEVICE), encode_receipt(first[:4]))
        assert seen.wait_for(14)
        time.sleep(0.5)
        assert len(seen.messages) == 14, "a receipt for 4 faces lets exactly 4 more out"

        cloud_says(broker, STATE_TOPIC, b"1", retain=True)  # up, but these receipts never come
        assert seen.wait_for(40 + 10, timeout=20), f"only {len(seen.messages)} published"
        assert {f.face_id for f in faces} <= set(ids_of(seen))


def test_a_burst_beyond_the_memory_queue_goes_out_without_waiting_for_a_redelivery(
        broker: MosquittoServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Faces that found the in-memory queue full (the window held the sender back) are on disk only; they
    are next in line for the redelivery pass, not due a whole redeliverAfterSeconds (60 s) later."""
    monkeypatch.setattr("facecap.outbox.publisher._FRESH_BYTES", 3000)  # three faces of 1000 bytes
    with producing(broker, tmp_path, b"1", max_unconfirmed=5, redeliver_after_seconds=60,
                   redeliver_max_per_second=0) as (publisher, seen):
        faces = [sample_face(device=DEVICE, size=1000, frame=i) for i in range(40)]
        publisher.capture(faces)
        assert publisher.stats.deferred > 0
        confirmed: set[str] = set()
        deadline = time.monotonic() + 15
        while publisher.outbox.counts().pending and time.monotonic() < deadline:
            fresh = set(ids_of(seen)) - confirmed  # the cloud's part: a receipt for each face it got
            if fresh:
                cloud_says(broker, receipt_topic(DEVICE), encode_receipt(sorted(fresh)))
                confirmed |= fresh
            time.sleep(0.1)
        assert publisher.outbox.counts().pending == 0, f"{len(confirmed)} of 40 confirmed within 15 s"
        assert set(ids_of(seen)) == {f.face_id for f in faces}


def test_stopping_with_a_full_window_does_not_wait_for_receipts_that_cannot_come(
        broker: MosquittoServer, tmp_path: Path) -> None:
    """A component stop while the uplink is down: the faces the window holds back are on disk, so stop()
    returns at once instead of waiting out its timeout, and the next start has every face."""
    with producing(broker, tmp_path, b"0", max_unconfirmed=5) as (publisher, seen):
        assert wait(lambda: publisher.bridge.up is False)
        publisher.capture([sample_face(device=DEVICE, size=1000, frame=i) for i in range(20)])
        assert seen.wait_for(5)
        began = time.monotonic()
        publisher.stop(timeout=10)
        assert time.monotonic() - began < 3, "stop waited for receipts that cannot come"
        assert publisher.outbox.counts().pending == 20


def test_without_a_bridge_state_the_window_does_not_hold_the_producer_back(
        broker: MosquittoServer, tmp_path: Path) -> None:
    """A broker without a bridge publishes no bridge state and may never send receipts: every face goes out."""
    with producing(broker, tmp_path, b"", max_unconfirmed=5) as (publisher, seen):
        publisher.capture([sample_face(device=DEVICE, size=1000, frame=i) for i in range(20)])
        assert seen.wait_for(20), f"only {len(seen.messages)} of 20 published"
        assert publisher.bridge.up is None


def test_faces_still_on_their_way_are_not_sent_twice_while_receipts_keep_coming(
        broker: MosquittoServer, tmp_path: Path) -> None:
    """A slow uplink: the cloud confirms one face every 0.3 s, in the order they were sent, so the last of
    the window waits far longer than redeliverAfterSeconds (0.5 s) for its receipt. Those faces are on their
    way; a second copy would only queue behind the first. Once receipts stop, overdue faces go again."""
    with producing(broker, tmp_path, b"1", max_unconfirmed=8, redeliver_after_seconds=0.5,
                   redeliver_max_per_second=0) as (publisher, seen):
        faces = [sample_face(device=DEVICE, size=1000, frame=i) for i in range(24)]
        publisher.capture(faces)
        assert seen.wait_for(8)
        for face in faces[:16]:  # 4.8 s: ten redelivery delays
            cloud_says(broker, receipt_topic(DEVICE), encode_receipt([face.face_id]))
            time.sleep(0.3)
        assert publisher.stats.republished == 0, "faces the receipts were still coming for went out again"
        assert ids_of(seen) == [f.face_id for f in faces]  # each once, in order
        # The receipts stop (the processor went away): the 8 unconfirmed faces go out again.
        assert wait(lambda: publisher.stats.republished >= 8, timeout=10)
        # `republished` counts them as they are taken to be sent: their arrival follows.
        again = {f.face_id for f in faces[16:]}
        assert wait(lambda: set(ids_of(seen)[24:]) == again, timeout=10), ids_of(seen)[24:]


def test_a_lost_receipt_is_not_held_back_by_the_receipts_of_later_faces(
        broker: MosquittoServer, tmp_path: Path) -> None:
    """A busy camera: a face every 0.2 s, each confirmed at once, while one face's receipt was lost (the
    bridge was down when it was published, or the cloud broker dropped it). Later faces overtake it, so it
    goes out again on its schedule, not after a whole redeliverMaxSeconds hold."""
    with producing(broker, tmp_path, b"1", redeliver_after_seconds=0.5, redeliver_max_seconds=60,
                   redeliver_max_per_second=0) as (publisher, seen):
        lost = sample_face(device=DEVICE, size=500, frame=0)
        publisher.capture([lost])
        assert seen.wait_for(1)
        published = time.monotonic()
        frame = 1
        while publisher.stats.republished == 0 and time.monotonic() - published < 10:
            face = sample_face(device=DEVICE, size=500, frame=frame)
            publisher.capture([face])
            frame += 1
            time.sleep(0.1)
            cloud_says(broker, receipt_topic(DEVICE), encode_receipt([face.face_id]))
            time.sleep(0.1)
        waited = time.monotonic() - published
        assert publisher.stats.republished == 1, f"not published again within {waited:.1f} s"
        assert waited < 5, f"published again only after {waited:.1f} s (redeliverAfterSeconds 0.5)"
        assert wait(lambda: ids_of(seen).count(lost.face_id) == 2)  # its arrival follows the count
