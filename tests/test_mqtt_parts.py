"""The MQTT client's parts that need no broker: the in-flight window, the ack ledger, the dispatcher."""

from __future__ import annotations

import threading
import time

import pytest

from facecap.mqtt import AckLedger, InFlightWindow, ReceivedMessage
from facecap.mqtt.dispatch import Dispatcher

pytestmark = pytest.mark.unit


def take_in_thread(window: InFlightWindow, timeout: float | None = None) -> tuple[threading.Thread, list[bool]]:
    """A publisher waiting for a slot in its own thread; the list gets acquire's answer."""
    answer: list[bool] = []
    thread = threading.Thread(target=lambda: answer.append(window.acquire(timeout=timeout)), daemon=True)
    thread.start()
    return thread, answer


def message(topic: str) -> ReceivedMessage:
    return ReceivedMessage(topic=topic, payload=b"", content_type=None, user_properties=(), qos=1, retain=False)


# --- in-flight window ---------------------------------------------------------------------------------------


def test_window_hands_out_at_most_its_limit() -> None:
    window = InFlightWindow(3)
    assert [window.acquire(block=False) for _ in range(4)] == [True, True, True, False]
    assert window.count == 3
    window.release()
    assert window.count == 2
    assert window.acquire(block=False)
    assert not window.acquire(block=False)


def test_window_blocks_until_a_release() -> None:
    window = InFlightWindow(1)
    assert window.acquire()
    thread, answer = take_in_thread(window)
    thread.join(0.2)
    assert thread.is_alive() and answer == []  # still waiting for the slot
    window.release()  # the PUBACK of the first publish
    thread.join(5)
    assert answer == [True]
    assert window.count == 1


def test_window_blocking_acquire_gives_up_at_its_timeout() -> None:
    window = InFlightWindow(1)
    assert window.acquire()
    started = time.monotonic()
    assert not window.acquire(timeout=0.2)
    assert time.monotonic() - started >= 0.2
    assert window.count == 1


def test_closing_the_window_wakes_waiting_publishers_and_refuses_new_ones() -> None:
    window = InFlightWindow(1)
    assert window.acquire()
    thread, answer = take_in_thread(window)  # would wait for ever
    thread.join(0.1)
    assert thread.is_alive()
    window.close()
    thread.join(5)
    assert answer == [False]
    assert not window.acquire(block=False)
    window.release()  # a publish sent before the close still completes
    assert window.count == 0
    assert not window.acquire(block=False)


def test_window_wait_empty_reports_whether_everything_completed() -> None:
    window = InFlightWindow(2)
    assert window.wait_empty(0)
    assert window.acquire() and window.acquire()
    assert not window.wait_empty(0.05)
    window.release()
    assert not window.wait_empty(0.05)
    threading.Timer(0.1, window.release).start()
    assert window.wait_empty(5)


def test_window_refuses_a_release_without_an_acquire_and_an_empty_limit() -> None:
    with pytest.raises(RuntimeError, match="released more often"):
        InFlightWindow(1).release()
    with pytest.raises(ValueError, match="at least one slot"):
        InFlightWindow(0)


# --- manual-ack ledger --------------------------------------------------------------------------------------


def overrun_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "receive maximum" in r.getMessage()]


def test_ledger_counts_unacknowledged_messages_and_their_peak() -> None:
    ledger = AckLedger(receive_maximum=10)
    ledger.new_connection()
    for _ in range(4):
        ledger.received()
    ledger.acked(ledger.connection)
    ledger.acked(ledger.connection)
    ledger.received()
    assert (ledger.unacked, ledger.peak) == (3, 4)


def test_ledger_ignores_acks_of_an_earlier_connection() -> None:
    ledger = AckLedger(receive_maximum=10)
    ledger.new_connection()
    before = ledger.connection
    ledger.received()
    ledger.received()
    ledger.new_connection()  # the broker counts afresh and redelivers
    assert ledger.connection != before and ledger.unacked == 0
    ledger.received()
    ledger.acked(before)
    assert ledger.unacked == 1
    ledger.acked(ledger.connection)
    ledger.acked(ledger.connection)  # one ack too many never goes below zero
    assert (ledger.unacked, ledger.peak) == (0, 2)


def test_ledger_warns_once_per_connection_when_the_broker_overruns(caplog: pytest.LogCaptureFixture) -> None:
    ledger = AckLedger(receive_maximum=2)
    with caplog.at_level("WARNING", logger="facecap.mqtt"):
        ledger.new_connection()
        ledger.received()
        ledger.received()
        assert overrun_warnings(caplog) == []  # at the receive maximum: the broker keeps its promise
        for _ in range(5):
            ledger.received()
        assert len(overrun_warnings(caplog)) == 1
        assert "2.0.13" in overrun_warnings(caplog)[0]
        ledger.new_connection()
        for _ in range(3):
            ledger.received()
        assert len(overrun_warnings(caplog)) == 2


def test_ledger_without_receive_maximum_never_warns(caplog: pytest.LogCaptureFixture) -> None:
    ledger = AckLedger(receive_maximum=None)
    with caplog.at_level("WARNING", logger="facecap.mqtt"):
        ledger.new_connection()
        for _ in range(100):
            ledger.received()
    assert ledger.peak == 100
    assert overrun_warnings(caplog) == []


# --- dispatcher ---------------------------------------------------------------------------------------------


def test_dispatcher_runs_the_handler_in_order_past_a_failure(caplog: pytest.LogCaptureFixture) -> None:
    seen: list[str] = []

    def handler(received: ReceivedMessage) -> None:
        seen.append(received.topic)
        if received.topic == "b":
            raise ValueError("bad message")

    dispatcher = Dispatcher("test-dispatch")
    dispatcher.handler = handler  # set after construction, before start
    for topic in "abc":
        dispatcher.put(message(topic))
    dispatcher.start()
    dispatcher.stop(5)
    assert seen == ["a", "b", "c"]
    assert any("handler failed on b" in r.getMessage() for r in caplog.records)


def test_dispatcher_without_a_handler_starts_no_thread() -> None:
    dispatcher = Dispatcher("idle")
    dispatcher.start()
    assert not dispatcher.running
    dispatcher.stop(1)


def test_a_dispatcher_with_several_threads_runs_the_handler_on_each_at_once() -> None:
    # The processor's workers are these threads: four messages are handled together, not one by one.
    barrier = threading.Barrier(4, timeout=5)
    names: list[str] = []

    def handler(received: ReceivedMessage) -> None:
        barrier.wait()  # breaks (and the test fails) unless four handlers run at the same time
        names.append(threading.current_thread().name)

    dispatcher = Dispatcher("pool", handler, threads=4)
    dispatcher.start()
    for topic in "abcd":
        dispatcher.put(message(topic))
    dispatcher.stop(5)
    assert not barrier.broken
    assert sorted(names) == ["pool-0", "pool-1", "pool-2", "pool-3"]
    assert dispatcher.waiting == 0


def test_a_dispatcher_stopping_lets_its_threads_handle_what_was_queued() -> None:
    handled: list[str] = []
    dispatcher = Dispatcher("pool", lambda received: handled.append(received.topic), threads=3)
    for topic in "abcdefg":
        dispatcher.put(message(topic))
    assert dispatcher.waiting == 7
    dispatcher.start()
    dispatcher.stop(5)
    assert sorted(handled) == list("abcdefg")
    with pytest.raises(ValueError, match="0 \\(inline\\) or more threads"):
        Dispatcher("negative", threads=-1)


def test_a_dispatcher_without_threads_runs_the_handler_inline() -> None:
    # The processor with an asynchronous store: the handler only starts work, on the caller's thread.
    seen: list[tuple[str, str]] = []
    dispatcher = Dispatcher("inline", lambda received: seen.append(
        (received.topic, threading.current_thread().name)), threads=0)
    dispatcher.start()
    assert not dispatcher.running
    for topic in "ab":
        dispatcher.put(message(topic))
    here = threading.current_thread().name
    assert seen == [("a", here), ("b", here)]
    assert dispatcher.waiting == 0
    dispatcher.stop(1)
