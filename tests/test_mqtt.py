"""The MQTT layer against real Mosquitto brokers."""

from __future__ import annotations

import gc
import os
import re
import signal
import threading
import time
from contextlib import ExitStack
from pathlib import Path

import psutil
import pytest
from awscrt import mqtt5

from facecap.contract import OutgoingFace, parse_message
from facecap.devkit.servers import CertificateAuthority, MosquittoServer, free_port, mosquitto_version
from facecap.errors import MqttAuthError, MqttConnectError, PublishError
from facecap.mqtt import MqttClient, MqttSettings, ReceivedMessage, StatusTopic
from facecap.polling import wait_until
from facecap.threadstate import keep_thread_state

from .conftest import MosquittoFactory
from .support.helpers import Collector, fake_jpeg, publish_all, sample_face, settings_for, subscriber
from .support.threadstate import ThreadStateWatch

pytestmark = pytest.mark.integration


def leave_backlog(settings: MqttSettings, client_id: str, faces: list[OutgoingFace]) -> None:
    """A persistent session `client_id` subscribes to faces/# and goes away; then `faces` are published."""
    with MqttClient(settings, client_id, persistent=True) as away:
        away.subscribe("faces/#")
    with MqttClient(settings, f"pub-for-{client_id}") as pub:
        publish_all(pub, faces, timeout=20)


def test_face_message_arrives_byte_identical(broker: MosquittoServer) -> None:
    face = sample_face()
    received = Collector()
    with subscriber(broker, "faces/#", received), MqttClient(settings_for(broker), "pub-identical") as pub:
        future = pub.publish(face.topic, face.payload, content_type=face.content_type,
                             user_properties=face.user_properties)
        assert future is not None
        future.result(timeout=10)
        assert received.wait_for(1)
    message = received.messages[0]
    assert message.topic == face.topic
    assert message.payload == face.payload
    assert message.content_type == "image/jpeg"
    assert message.user_properties == face.user_properties
    parsed = parse_message(message.topic, message.payload, message.content_type, message.user_properties)
    assert parsed.face_id == face.face_id


def test_thousand_30kb_messages_all_acked_with_bounded_memory(broker: MosquittoServer) -> None:
    received = Collector()
    limit = 64
    with (subscriber(broker, "faces/#", received),
          MqttClient(settings_for(broker, max_in_flight=limit), "pub-thousand") as pub):
        process = psutil.Process(os.getpid())
        gc.collect()
        rss_before = process.memory_info().rss
        peak_in_flight = 0
        futures = []
        for i in range(1000):
            face = sample_face(size=30_000, frame=i)
            future = pub.publish(face.topic, face.payload, content_type=face.content_type,
                                 user_properties=face.user_properties, timeout=30)
            assert future is not None
            futures.append(future)
            peak_in_flight = max(peak_in_flight, pub.in_flight)
        for future in futures:
            future.result(timeout=30)
        rss_growth = process.memory_info().rss - rss_before
        assert pub.stats.published == 1000
        assert peak_in_flight <= limit
        assert received.wait_for(1000, timeout=30)
    ids = {dict(m.user_properties)["face-id"] for m in received.messages}
    assert len(ids) == 1000
    print(f"1000 x 30 KB: peak in flight {peak_in_flight} (limit {limit}), RSS growth {rss_growth / 1e6:.1f} MB")
    # 1000 x 30 KB is 30 MB; with at most 64 in flight the client itself holds about 2 MB of payloads.
    # The subscriber keeps all 30 MB on purpose, so bound the growth by that plus a generous margin.
    assert rss_growth < 30e6 + 40e6


def test_publish_without_blocking_reports_full_window(broker: MosquittoServer) -> None:
    with MqttClient(settings_for(broker, max_in_flight=2), "pub-window") as pub:
        broker.stop()  # nothing can be acknowledged now
        first = pub.publish("faces/a/b", fake_jpeg(1000), block=False)
        second = pub.publish("faces/a/b", fake_jpeg(1000), block=False)
        third = pub.publish("faces/a/b", fake_jpeg(1000), block=False)
        assert first is not None and second is not None
        assert third is None  # the caller learns at once that the window is full
        broker.start()
        first.result(timeout=20)
        second.result(timeout=20)
        assert pub.flush(5)


def test_puback_failure_code_fails_the_future(mosquitto: MosquittoFactory) -> None:
    server = mosquitto(users={"dev": "pw"}, acl="user dev\ntopic write faces/dev/#\n")
    with MqttClient(settings_for(server, username="dev", password="pw"), "pub-denied") as pub:
        allowed = pub.publish("faces/dev/cam", fake_jpeg(100))
        denied = pub.publish("faces/other/cam", fake_jpeg(100))
        assert allowed is not None and denied is not None
        allowed.result(timeout=10)
        with pytest.raises(PublishError, match="NOT_AUTHORIZED"):
            denied.result(timeout=10)


def test_persistent_subscriber_gets_what_was_published_while_away(broker: MosquittoServer) -> None:
    settings = settings_for(broker)
    faces = [sample_face(size=2000, frame=i) for i in range(200)]
    leave_backlog(settings, "persistent-sub", faces)
    back = Collector()
    # No subscribe call: the session on the broker still has it.
    with MqttClient(settings, "persistent-sub", persistent=True, on_message=back):
        assert back.wait_for(200, timeout=20), f"only {len(back.messages)} of 200 arrived"
    got = {dict(m.user_properties)["face-id"] for m in back.messages}
    assert got == {f.face_id for f in faces}


def test_subscriptions_restored_when_broker_lost_the_session(mosquitto: MosquittoFactory) -> None:
    server = mosquitto(persistence=False)  # a restart forgets every session
    received = Collector()
    with MqttClient(settings_for(server), "forgetful", persistent=True, on_message=received) as sub:
        sub.subscribe("faces/#")
        server.restart()
        deadline = time.monotonic() + 15
        while not sub.connected or sub.stats.connects < 2:
            assert time.monotonic() < deadline, "subscriber did not reconnect"
            time.sleep(0.1)
        time.sleep(0.5)  # the SUBSCRIBE goes out right after the CONNACK
        with MqttClient(settings_for(server), "pub-after-restart") as pub:
            face = sample_face()
            future = pub.publish(face.topic, face.payload, user_properties=face.user_properties)
            assert future is not None
            future.result(timeout=10)
            assert received.wait_for(1, timeout=10)


def test_unacknowledged_messages_are_redelivered_after_a_crash(broker: MosquittoServer) -> None:
    settings = settings_for(broker)
    acked: list[str] = []
    lock = threading.Lock()
    first = MqttClient(settings, "worker", persistent=True, manual_ack=True, receive_maximum=100)

    def ack_every_other(message: ReceivedMessage) -> None:
        # Work "finishes" for even frames only; odd ones are still in progress when the consumer dies.
        frame = int(dict(message.user_properties)["frame"])
        if frame % 2 == 0:
            first.ack(message)
            with lock:
                acked.append(dict(message.user_properties)["face-id"])

    first.set_handler(ack_every_other)  # given after construction, as an injected client gets it
    faces = [sample_face(size=1000, frame=i) for i in range(40)]
    with first, MqttClient(settings, "pub-crash") as pub:
        first.subscribe("faces/#")
        publish_all(pub, faces, timeout=10)
        deadline = time.monotonic() + 10
        while len(acked) < 20 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(acked) == 20
        time.sleep(0.5)  # let the PUBACKs reach the broker before the "crash"
        first._client.stop()  # the process dies: no more acks, no clean shutdown of our own
        redelivered = Collector()
        with MqttClient(settings, "worker", persistent=True, on_message=redelivered, manual_ack=True) as second:
            odd = {f.face_id for f in faces if int(dict(f.user_properties)["frame"]) % 2 == 1}
            assert redelivered.wait_for(20, timeout=15), f"only {len(redelivered.messages)} redelivered"
            got = {dict(m.user_properties)["face-id"] for m in redelivered.messages}
            assert got == odd  # exactly the unacknowledged ones come back
            for message in redelivered.messages:
                second.ack(message)


def test_tls_and_password_auth(mosquitto: MosquittoFactory, ca: CertificateAuthority) -> None:
    server = mosquitto(ca=ca, users={"device-1": "s3cret"})
    password_file = Path(server.folder) / "device-1.password"
    password_file.write_text("s3cret\n")
    settings = settings_for(server, tls=True, ca_file=str(ca.cert), username="device-1",
                            password_file=str(password_file))
    received = Collector()
    with MqttClient(settings, "tls-client", on_message=received) as client:
        with pytest.raises(RuntimeError, match="before start"):
            client.on_message = None  # the dispatcher runs already
        client.subscribe("faces/#")
        face = sample_face()
        future = client.publish(face.topic, face.payload, user_properties=face.user_properties)
        assert future is not None
        future.result(timeout=10)
        assert received.wait_for(1)


def test_mutual_tls_client_certificate(mosquitto: MosquittoFactory, ca: CertificateAuthority) -> None:
    server = mosquitto(ca=ca, require_certificate=True)
    device = ca.issue("device-1")
    with MqttClient(settings_for(server, tls=True, ca_file=str(ca.cert), cert_file=str(device.cert),
                                 key_file=str(device.key)), "mtls-good") as good:
        assert good.connected
    bare = MqttClient(settings_for(server, tls=True, ca_file=str(ca.cert), connect_timeout_seconds=45), "mtls-bare")
    with pytest.raises(MqttConnectError), bare:
        pytest.fail("connected without a client certificate")


def test_wrong_password_fails_fast_with_clear_error(mosquitto: MosquittoFactory, ca: CertificateAuthority) -> None:
    server = mosquitto(ca=ca, users={"device-1": "right"})
    client = MqttClient(settings_for(server, tls=True, ca_file=str(ca.cert), username="device-1",
                                     password="Zq7-not-it", connect_timeout_seconds=20), "bad-pw-client")
    started = time.monotonic()
    with pytest.raises(MqttAuthError, match=r"BAD_USERNAME_OR_PASSWORD|NOT_AUTHORIZED") as info, client:
        pytest.fail("connected with a wrong password")
    assert time.monotonic() - started < 10  # refused, not waited out
    assert "Zq7-not-it" not in str(info.value)  # the password never appears in the error


def test_wrong_ca_is_a_connect_error_given_at_once(mosquitto: MosquittoFactory, ca: CertificateAuthority,
                                                   tmp_path: Path) -> None:
    server = mosquitto(ca=ca)
    other = CertificateAuthority(tmp_path / "other-ca", name="someone-else")
    # s2n holds back a TLS failure report for 10-30 s (blinding), so the connect timeout allows for that;
    # a wrong CA must end the wait as soon as it is reported, not when that timeout runs out.
    timeout = 45
    client = MqttClient(settings_for(server, tls=True, ca_file=str(other.cert), connect_timeout_seconds=timeout),
                        "wrong-ca")
    started = time.monotonic()
    with pytest.raises(MqttConnectError, match="TLS_ERROR_NEGOTIATION_FAILURE") as info, client:
        pytest.fail("connected with a wrong CA")
    elapsed = time.monotonic() - started
    assert "within" not in str(info.value), "waited out the connect timeout instead of giving up on the TLS error"
    assert elapsed < timeout, f"the TLS failure took {elapsed:.1f} s"


def test_waiting_for_a_broker_sleeps_between_attempts_and_connects_once_it_is_up(
        mosquitto: MosquittoFactory) -> None:
    # The waiting thread must sleep until the next attempt ends, not poll the last failure in a loop
    # (it once spun a whole core for connectTimeoutSeconds while a broker was down).
    port = free_port()
    settings = MqttSettings(host="127.0.0.1", port=port, connect_timeout_seconds=3)
    cpu = time.thread_time()
    with pytest.raises(MqttConnectError, match=r"within 3 s.*CONNECTION_REFUSED"):
        MqttClient(settings, "refused").start()
    assert time.thread_time() - cpu < 1.0, "the wait used the CPU instead of sleeping"
    # A broker that comes up while a client waits ends the wait at its next attempt.
    late = MqttClient(settings.model_copy(update={"connect_timeout_seconds": 30}), "late")
    started = threading.Thread(target=late.start)
    started.start()
    try:
        assert wait_until(lambda: late.stats.connect_failures >= 1, 10, 0.02)
        mosquitto(port=port)
        started.join(timeout=30)
        assert not started.is_alive() and late.connected
    finally:
        late.stop()


def test_each_outage_counts_its_connect_attempts_from_one(broker: MosquittoServer,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    """The warning's attempt number is this outage's, not the client's lifetime count: after months of
    flapping uplinks it would read like one very long outage."""
    client = MqttClient(settings_for(broker, min_reconnect_delay_seconds=0.1, max_reconnect_delay_seconds=0.2),
                        "counting")
    with caplog.at_level("WARNING", logger="facecap.mqtt.client"):
        client.start()
        try:
            for _ in range(2):
                failures = client.stats.connect_failures  # the client's lifetime total
                broker.stop()
                assert wait_until(lambda: client.stats.connect_failures >= failures + 3, 15, 0.02)  # noqa: B023
                broker.start()
                assert wait_until(lambda: client.connected, 15, 0.02)
        finally:
            client.stop()
    attempts = re.findall(r"connection failed \(attempt (\d+)\)", caplog.text)
    assert attempts.count("1") == 2, attempts  # the first failure of each outage, each logged at once


def test_status_online_retained_then_offline_on_clean_stop(broker: MosquittoServer) -> None:
    topic = "facecap/jetson-1/detector/status"
    seen = Collector()
    late = Collector()
    with ExitStack() as clients:
        client = clients.enter_context(MqttClient(settings_for(broker), "status-client", status=StatusTopic(topic)))
        time.sleep(0.3)
        clients.enter_context(subscriber(broker, topic, seen))  # retained: arrives on subscribe
        assert seen.wait_for(1)
        assert seen.messages[-1].payload == b"online" and seen.messages[-1].retain
        client.stop()
        assert seen.wait_for(2)
        assert seen.messages[-1].payload == b"offline"
        time.sleep(0.5)
        assert len(seen.messages) == 2  # the will is not published on top of the clean `offline`
        clients.enter_context(subscriber(broker, topic, late))
        assert late.wait_for(1)
    assert late.messages[0].payload == b"offline" and late.messages[0].retain


def test_last_will_on_unclean_disconnect(broker: MosquittoServer) -> None:
    topic = "facecap/jetson-1/logger/status"
    seen = Collector()
    dying = MqttClient(settings_for(broker, keep_alive_seconds=5), "will-client", status=StatusTopic(topic))
    with subscriber(broker, topic, seen), dying:
        assert seen.wait_for(1)
        assert seen.messages[-1].payload == b"online"
        # Stop the awscrt client without our clean shutdown and without a DISCONNECT "normal": the broker
        # must publish the will. awscrt sends DISCONNECT_WITH_WILL_MESSAGE when asked to.
        dying._client.stop(mqtt5.DisconnectPacket(reason_code=mqtt5.DisconnectReasonCode.DISCONNECT_WITH_WILL_MESSAGE))
        assert seen.wait_for(2, timeout=10)
        assert seen.messages[-1].payload == b"offline"


def test_stop_waits_for_in_flight_then_gives_up_at_timeout(broker: MosquittoServer) -> None:
    with MqttClient(settings_for(broker), "pub-stop") as pub:
        broker.stop()
        future = pub.publish("faces/a/b", fake_jpeg(100))
        assert future is not None
        started = time.monotonic()
        assert pub.stop(timeout=1.0) is False  # still in flight when the time ran out
        assert 0.9 < time.monotonic() - started < 5
        assert pub.publish("faces/a/b", fake_jpeg(100), timeout=5) is None  # a stopped client takes no more


def test_stop_keeps_to_its_timeout_when_the_broker_hangs(broker: MosquittoServer) -> None:
    """A broker that stops answering (SIGSTOP) leaves the last publishes and the offline status without
    their PUBACKs: the stop still ends within its timeout (Greengrass kills 5 s after SIGTERM)."""
    assert broker.process is not None
    with MqttClient(settings_for(broker), "pub-hang", status=StatusTopic("facecap/jetson-1/x/status")) as pub:
        os.kill(broker.process.pid, signal.SIGSTOP)
        try:
            assert pub.publish("faces/a/b", fake_jpeg(100)) is not None
            started = time.monotonic()
            assert pub.stop(timeout=1.0) is False
            elapsed = time.monotonic() - started
        finally:
            os.kill(broker.process.pid, signal.SIGCONT)
    assert 0.9 < elapsed < 1.8


def test_receive_maximum_bounds_what_a_slow_consumer_holds_or_the_overrun_is_reported(
        broker: MosquittoServer, caplog: pytest.LogCaptureFixture) -> None:
    # A backlog waits for a persistent session; the consumer then takes it, acknowledging each message a
    # little after it arrives. A broker that keeps its promise never has more than the receive maximum
    # unacknowledged at the client; Mosquitto before 2.0.13 sends more, and the client must say so.
    settings = settings_for(broker)
    receive_maximum = 8
    held: list[ReceivedMessage] = []
    lock = threading.Lock()

    def hold(message: ReceivedMessage) -> None:
        with lock:
            held.append(message)

    faces = [sample_face(size=500, frame=i) for i in range(200)]
    leave_backlog(settings, "slow-consumer", faces)
    acked = 0
    with (caplog.at_level("WARNING", logger="facecap.mqtt"),
          MqttClient(settings, "slow-consumer", persistent=True, on_message=hold, manual_ack=True,
                     receive_maximum=receive_maximum) as consumer):
        deadline = time.monotonic() + 30
        while acked < len(faces) and time.monotonic() < deadline:
            with lock:
                batch, held[:] = held[:], []
            for message in batch:
                time.sleep(0.002)  # the work
                consumer.ack(message)
                acked += 1
            time.sleep(0.01)
    assert acked == len(faces)
    overrun_warnings = [r for r in caplog.records if "receive maximum" in r.getMessage()]
    peak = consumer.stats.unacked_peak
    print(f"\nMosquitto {'.'.join(map(str, mosquitto_version()))}: at most {peak} unacknowledged messages held "
          f"at once (receive maximum {receive_maximum}); overrun warnings: {len(overrun_warnings)}")
    if mosquitto_version() >= (2, 0, 13):
        assert peak <= receive_maximum
        assert not overrun_warnings
    else:
        assert peak > receive_maximum  # the known bug shows here; if it did not, this test is wrong
        assert len(overrun_warnings) == 1
        assert "2.0.13" in overrun_warnings[0].getMessage()


def test_awscrt_threads_keep_their_python_state_between_messages(broker: MosquittoServer,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    # The connection's thread keeps one Python state for all its callbacks (facecap/threadstate.py).
    watch = ThreadStateWatch(keep_thread_state)
    monkeypatch.setattr("facecap.mqtt.client.keep_thread_state", watch)
    received = Collector()
    with subscriber(broker, "state/#", received), MqttClient(settings_for(broker), "pub-state") as pub:
        for index in range(10):
            future = pub.publish(f"state/{index}", b"face")
            assert future is not None
            future.result(timeout=10)
        assert received.wait_for(10)
    assert sum(len(seen) for seen in watch.calls.values()) >= 12  # two connections and ten messages
    assert watch.forgotten() == {}
