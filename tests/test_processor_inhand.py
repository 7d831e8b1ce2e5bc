"""The faces in hand: one copy of a face is stored at a time, later copies wait without their payload."""

from __future__ import annotations

import pytest

from facecap.mqtt import ReceivedMessage
from facecap.processor.inhand import FacesInHand

pytestmark = pytest.mark.unit


def message(connection: int, payload: bytes = b"jpeg") -> ReceivedMessage:
    return ReceivedMessage("faces/jetson-1/cam0", payload, "image/jpeg", (), 1, False,
                           ack_handle=object(), connection=connection)


class Live:
    def __init__(self, connection: int) -> None:
        self.connection = connection

    def __call__(self) -> int:
        return self.connection


def test_a_copy_waits_without_its_payload_and_comes_back_at_release() -> None:
    in_hand = FacesInHand(Live(1))
    assert in_hand.claim("a.jpg", message(1)) == (True, [])
    copy = message(1)
    assert in_hand.claim("a.jpg", copy) == (False, [])
    assert in_hand.claim("b.jpg", message(1)) == (True, [])  # another face is stored on its own
    held = in_hand.release("a.jpg")
    assert len(held) == 1 and held[0].payload == b"" and held[0].ack_handle is copy.ack_handle
    assert in_hand.release("a.jpg") == []
    assert in_hand.claim("a.jpg", message(1)) == (True, [])  # after release a copy is stored again
    assert len(in_hand) == 2


def test_only_copies_of_the_live_connection_are_held() -> None:
    live = Live(2)
    in_hand = FacesInHand(live)
    first = message(1)
    assert in_hand.claim("a.jpg", first) == (True, [])  # stored whatever its connection
    on_two = message(2)
    assert in_hand.claim("a.jpg", on_two) == (False, [])
    live.connection = 3  # a reconnect: the copy from 2 no longer counts once the one from 3 comes
    on_three = message(3)
    first_copy, dropped = in_hand.claim("a.jpg", on_three)
    assert not first_copy and [copy.ack_handle for copy in dropped] == [on_two.ack_handle]
    late = message(2)  # a copy from 2 whose handling ended only now: dropped, the one from 3 is kept
    assert in_hand.claim("a.jpg", late) == (False, [late])
    assert [copy.ack_handle for copy in in_hand.release("a.jpg")] == [on_three.ack_handle]
