"""The outbox's send window on its own: room, receipts, and expiry only while the bridge may be up."""

from __future__ import annotations

import threading
import time

from facecap.outbox.flow import BridgeUpHold, ReceiptFlow, redelivery_scope
from facecap.outbox.window import SendWindow


def test_the_window_fills_and_a_receipt_makes_room() -> None:
    window = SendWindow(3, expire_after=60)
    stop = threading.Event()
    for face_id in ("a", "b", "c"):
        assert window.wait_for_room(stop, lambda: True, tick=0.01)
        window.sent(face_id)
    waiter = threading.Thread(target=window.wait_for_room, args=(stop, lambda: True, 0.01))
    waiter.start()
    waiter.join(0.3)
    assert waiter.is_alive(), "a full window must block"
    window.confirmed(["b", "not-ours"])
    waiter.join(5)
    assert not waiter.is_alive()
    assert len(window) == 2


def test_a_face_sent_again_counts_once() -> None:
    window = SendWindow(2, expire_after=60)
    window.sent("a")
    window.sent("a")
    assert len(window) == 1


def test_faces_expire_only_when_allowed() -> None:
    window = SendWindow(2, expire_after=0.2)
    stop = threading.Event()
    window.sent("a")
    window.sent("b")
    time.sleep(0.3)
    stop_later = threading.Timer(0.5, stop.set)
    stop_later.start()
    assert window.wait_for_room(stop, lambda: False, tick=0.05) is False  # bridge down: stays full, stop wins
    assert len(window) == 2
    stop.clear()
    assert window.wait_for_room(stop, lambda: True, tick=0.05) is True  # bridge up: both expired
    assert len(window) == 0


def test_full_and_forgetting_overdue_faces() -> None:
    window = SendWindow(1, expire_after=0.1)
    assert not window.full
    window.sent("a")
    assert window.full
    time.sleep(0.15)
    assert window.full  # overdue, but nothing lets it leave on its own
    window.forget_overdue()
    assert not window.full


def test_receipts_that_keep_coming_hold_overdue_faces_back_for_a_while() -> None:
    flow = ReceiptFlow(quiet=60, longest=900)
    assert not flow.holding(now=0)  # no receipt yet: nothing says the faces are on their way
    flow.receipt(now=100)
    assert flow.holding(now=159)
    assert not flow.holding(now=160)  # none for `quiet` seconds: the pipe stalled, overdue faces go
    for moment in range(200, 1100, 30):  # a busy camera: receipts every 30 s
        flow.receipt(now=moment)
        assert flow.holding(now=moment) == (moment - 200 < 900), moment
    # After `longest`, the overdue faces get `quiet` seconds to go out (a receipt lost while the others
    # came), then the next hold begins.
    for moment in (1100, 1130):
        flow.receipt(now=moment)
        assert not flow.holding(now=moment), moment
    flow.receipt(now=1160)
    assert flow.holding(now=1160)
    assert flow.holding(now=1180)


def test_while_receipts_come_only_faces_a_later_one_overtook_leave() -> None:
    window = SendWindow(4, expire_after=0.2)  # overtaken_after: 0.2 s as well
    stop = threading.Event()
    window.sent("lost")  # its receipt will never come
    time.sleep(0.25)
    window.sent("slow")  # on its way over a slow link
    window.sent("confirmed")
    window.confirmed(["confirmed"])  # sent 0.25 s after "lost": "lost" is overtaken, "slow" is not
    assert window.presumed_lost() == ["lost"]
    time.sleep(0.25)  # both overdue now
    window.sent("x")
    window.sent("y")
    assert window.full
    assert window.wait_for_room(stop, lambda: True, tick=0.05, held=lambda: True)
    assert len(window) == 3  # "lost" left; "slow" waits for its receipt
    assert window.presumed_lost() == ["lost"]  # still known, for the redelivery pass
    window.sent("lost")  # published again: on its way once more, no longer presumed lost
    assert window.presumed_lost() == []
    assert window.wait_for_room(stop, lambda: True, tick=0.05)  # no hold: every overdue face may leave
    assert len(window) < 4


def test_a_hold_after_bridge_up_ends_and_is_not_extended() -> None:
    hold = BridgeUpHold(seconds=60)
    assert not hold.holding(now=0)
    hold.begin(now=100)
    assert hold.holding(now=100) and hold.holding(now=159)
    hold.begin(now=150)  # the bridge came back again within the hold: not extended
    assert not hold.holding(now=160)


def test_a_flapping_bridge_does_not_hold_overdue_faces_back_for_as_long_as_it_flaps() -> None:
    hold = BridgeUpHold(seconds=0.5)
    free = 0
    for tick in range(60):  # the bridge comes back every 50 ms for 3 s
        now = tick * 0.05
        hold.begin(now=now)
        free += not hold.holding(now=now)
    # One hold of 0.5 s then 0.5 s free, over and over, where each bridge-up used to push it a whole hold
    # further and a face whose receipt was lost never went out again.
    assert 25 <= free <= 35


def test_a_bridge_up_hold_holds_even_the_faces_presumed_lost() -> None:
    assert redelivery_scope(bridge_held=False, receipts_held=False) == (True, False)  # every overdue face
    assert redelivery_scope(bridge_held=False, receipts_held=True) == (False, True)  # those presumed lost
    assert redelivery_scope(bridge_held=True, receipts_held=True) == (False, False)
    assert redelivery_scope(bridge_held=True, receipts_held=False) == (False, False)
