"""The publisher never blocks and stays bounded: driven with a broker stand-in whose acknowledgements the
test releases by hand."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from datetime import datetime, timezone

import pytest

from facecap.contract import FaceMetadata
from facecap.detector.publisher import FacePublisher
from facecap.errors import PublishError

pytestmark = pytest.mark.unit


class HeldBroker:
    """Accepts up to `slots` publishes and acknowledges them only when the test says so."""

    def __init__(self, slots: int) -> None:
        self.slots = slots
        self.pending: list[Future[None]] = []
        self.blocking_calls = 0

    def publish(self, topic: str, payload: bytes, *, content_type: str | None = None,
                user_properties: Sequence[tuple[str, str]] | Mapping[str, str] = (), retain: bool = False,
                qos: int = 1, block: bool = True, timeout: float | None = None) -> Future[None] | None:
        if block:
            self.blocking_calls += 1
        if len([f for f in self.pending if not f.done()]) >= self.slots:
            return None
        future: Future[None] = Future()
        self.pending.append(future)
        return future


def jpeg(size: int) -> bytes:
    return b"\xff\xd8\xff\xe0" + bytes(size - 4)


def meta() -> FaceMetadata:
    return FaceMetadata("dev", "cam", datetime.now(timezone.utc), (1, 2, 30, 40), 0.9, frame=3, track_id="t")


def test_drops_when_the_client_has_no_slot_and_never_blocks() -> None:
    broker = HeldBroker(slots=2)
    publisher = FacePublisher(broker, topic_prefix="faces", max_payload_bytes=10_000, max_queued_bytes=1_000_000)
    results = [publisher.submit(jpeg(100), meta()) for _ in range(5)]
    assert results == [True, True, False, False, False]
    assert broker.blocking_calls == 0
    assert (publisher.stats.dropped, publisher.stats.queued_bytes) == (3, 200)
    broker.pending[0].set_result(None)
    broker.pending[1].set_exception(PublishError("refused"))
    assert (publisher.stats.published, publisher.stats.failed, publisher.stats.queued_bytes) == (1, 1, 0)
    assert publisher.submit(jpeg(100), meta()) is True


def test_the_byte_budget_bounds_what_waits() -> None:
    broker = HeldBroker(slots=100)
    publisher = FacePublisher(broker, topic_prefix="faces", max_payload_bytes=10_000, max_queued_bytes=2_500)
    results = [publisher.submit(jpeg(1_000), meta()) for _ in range(4)]
    assert results == [True, True, False, False]
    assert publisher.stats.queued_bytes == 2_000
    broker.pending[0].set_result(None)
    assert publisher.submit(jpeg(1_000), meta()) is True


def test_an_unsendable_crop_is_dropped_not_raised() -> None:
    publisher = FacePublisher(HeldBroker(slots=5), topic_prefix="faces", max_payload_bytes=1_000,
                              max_queued_bytes=1_000_000)
    assert publisher.submit(b"GIF89a", meta()) is False
    assert publisher.submit(jpeg(2_000), meta()) is False
    assert publisher.stats.dropped == 2
