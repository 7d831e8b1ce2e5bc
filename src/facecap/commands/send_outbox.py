"""`facecap send --outbox DIR`: the durable way to send. Each face is committed to the outbox in DIR
before it is published; the command then waits until the cloud's receipts have emptied the outbox. Faces
left from an earlier run (a power cut, a timeout) are published again first, so running it again with no
images finishes what an earlier run started."""

from __future__ import annotations

import argparse
import logging
import time
from datetime import datetime, timezone
from pathlib import Path

from ..contract import FaceMetadata, OutgoingFace, build_message
from ..errors import ConfigError
from ..mqtt import MqttSettings

log = logging.getLogger(__name__)

# Faces committed per synced transaction: each is on disk before it is published, and a batch costs
# one sync instead of one per face.
_COMMIT_BATCH = 32


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("durable sending (contract v1.1 receipts)")
    group.add_argument("--outbox", type=Path, metavar="DIR",
                       help="keep each face in the outbox in DIR until its receipt arrives; with no IMAGE, "
                            "only publish what DIR still holds")
    group.add_argument("--receipt-timeout", type=float, metavar="SECONDS",
                       help="how long to wait for the receipts that empty the outbox (default 300; exit 1 if "
                            "faces are still pending then: they stay in DIR for the next run)")
    group.add_argument("--redeliver-after", type=float, metavar="SECONDS",
                       help="publish a face again when its receipt has not come after this long (default 60)")
    group.add_argument("--bridge-client-id", default="", metavar="ID",
                       help="client id of the edge broker's bridge, whose state gates redelivery "
                            "(default facecap-edge-<device-id>)")


def image_face(data: bytes, size: tuple[int, int], frame: int, args: argparse.Namespace,
               device: str) -> OutgoingFace:
    """A whole image as one face message (the box is the image), captured now."""
    width, height = size
    return build_message(data, FaceMetadata(
        device_id=device, camera_id=args.camera_id, captured_at=datetime.now(timezone.utc),
        bbox=(0, 0, width, height), score=1.0, frame=frame, track_id="", detector="send"),
        topic_prefix=args.topic_prefix)


def outbox_faces(images: list[tuple[Path, bytes, tuple[int, int]]], args: argparse.Namespace,
                 device: str, repeat: int) -> list[OutgoingFace]:
    return [image_face(data, size, round_ * len(images) + index, args, device)
            for round_ in range(repeat) for index, (_, data, size) in enumerate(images)]


def send_with_outbox(args: argparse.Namespace, settings: MqttSettings, device: str,
                     faces: list[OutgoingFace], *, rate: float, receipt_timeout: float,
                     redeliver_after: float) -> int:
    if args.legacy:
        raise ConfigError("send", [("--legacy", "bare images have no face id, so they cannot use --outbox")])
    # Here, not at the top: every command's module is imported to build the parser, and the publisher
    # loads the MQTT client (awscrt), which the other components' processes should not carry.
    from ..outbox import Outbox, OutboxPublisher, OutboxSettings
    from ..outbox.schema import OutboxBusyError

    try:
        outbox = Outbox(args.outbox, OutboxSettings(redeliver_after_seconds=redeliver_after,
                                                    bridge_client_id=args.bridge_client_id))
    except OutboxBusyError as exc:
        raise ConfigError("send", [("--outbox", str(exc))]) from None
    publisher = OutboxPublisher(outbox, settings, f"facecap-send-{device}-{int(time.time())}", device)
    publisher.start()
    try:
        publisher.wait_subscribed(settings.connect_timeout_seconds)
        interval = 1.0 / rate if rate > 0 else 0.0
        batch = 1 if interval else _COMMIT_BATCH
        refused = 0
        for start in range(0, len(faces), batch):
            refused += publisher.capture(faces[start:start + batch]).count(False)
            if interval:
                time.sleep(interval)
        log.info("captured %d faces into %s (%d refused: outbox full); waiting up to %.0f s for receipts",
                 len(faces) - refused, outbox.path, refused, receipt_timeout)
        drained = publisher.wait_drained(receipt_timeout)
        log.info("%s", publisher.summary())
        if not drained:
            log.error("%d faces still wait for their receipt in %s; run `facecap send --outbox %s` again to "
                      "publish them", outbox.counts().pending, outbox.path, args.outbox)
        return 0 if drained and not refused else 1
    finally:
        publisher.stop(timeout=5)
        outbox.close()
