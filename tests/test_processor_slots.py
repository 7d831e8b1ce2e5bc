"""Slots: the bound on the faces an asynchronous store holds at once."""

from __future__ import annotations

import threading

import pytest

from facecap.processor.slots import Slots


def test_items_beyond_the_limit_wait_and_take_over_released_slots_in_arrival_order() -> None:
    slots: Slots[str] = Slots(2)
    assert [slots.take(item) for item in "abcd"] == [True, True, False, False]
    assert (slots.busy, slots.waiting) == (2, 2)
    assert slots.release() == "c"  # the slot goes straight to the first waiting item
    assert slots.release() == "d"
    assert (slots.busy, slots.waiting) == (2, 0)
    assert slots.release() is None
    assert slots.release() is None
    assert (slots.busy, slots.waiting) == (0, 0)
    assert slots.take("e")


def test_dropping_the_waiting_items_leaves_the_busy_slots_alone() -> None:
    slots: Slots[int] = Slots(1)
    assert slots.take(1)
    assert not slots.take(2) and not slots.take(3)
    assert slots.drop_waiting() == [2, 3]
    assert (slots.busy, slots.waiting) == (1, 0)
    assert slots.release() is None


def test_threads_taking_and_releasing_never_exceed_the_limit() -> None:
    slots: Slots[int] = Slots(3)
    holding, most = [0], [0]
    lock = threading.Lock()

    def hold() -> None:
        # What the processor does: an item that has a slot is started, and one released hands it on.
        while True:
            with lock:
                holding[0] += 1
                most[0] = max(most[0], holding[0])
            with lock:
                holding[0] -= 1
            if slots.release() is None:
                return

    def arrive(base: int) -> None:
        for item in range(base, base + 200):
            if slots.take(item):
                hold()

    threads = [threading.Thread(target=arrive, args=(base,)) for base in (0, 1000, 2000, 3000, 4000)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert 1 <= most[0] <= 3
    assert (slots.busy, slots.waiting) == (0, 0)


def test_a_limit_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Slots(0)
