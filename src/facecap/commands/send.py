"""`facecap send IMAGE...`: publish image files as face messages, for trying the pipeline by hand."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any

from pydantic import Field

from ..config import CLIENT_ID, ConfigModel, Seconds, TopicConfig, read_config_source, resolve_device_id, with_flags
from ..contract import DEFAULT_TOPIC_PREFIX, face_topic, sniff_content_type
from ..errors import ConfigError, FacecapError
from ..imagesize import image_size
from ..logs import setup_logging
from ..mqtt import MqttSettings
from ..validation import mqtt_problems
from . import send_outbox
from .subcommand import add_command

log = logging.getLogger(__name__)


class _SendConfig(ConfigModel):
    """Only the connection, so FACECAP_MQTT__* variables apply as they do for the components."""

    mqtt: MqttSettings = MqttSettings()


class _SendOptions(TopicConfig):
    """The flags of `send` that are not connection settings, checked like configuration keys (topicPrefix by
    the components' own rule)."""

    repeat: int = Field(1, ge=1, description="Send the set this many times (new face ids).")
    rate: float = Field(0.0, ge=0, description="Messages per second (0: as fast as acknowledged).")
    receipt_timeout_seconds: Seconds = Field(300.0, description="--outbox: how long to wait for the receipts.")
    redeliver_after_seconds: Seconds = Field(60.0, description="--outbox: publish again without a receipt.")
    bridge_client_id: str = Field("", pattern=CLIENT_ID, description="--outbox: the edge broker's bridge client id.")


def register(subparsers: Any) -> None:
    parser = add_command(subparsers, "send", run, help="publish JPEG/PNG files as face messages")
    parser.add_argument("images", nargs="*", type=Path, metavar="IMAGE", help="JPEG or PNG files")
    parser.add_argument("--mqtt", metavar="JSON|FILE", help="MQTT settings, e.g. '{\"host\": \"...\", \"tls\": true}'")
    parser.add_argument("--host", help="broker host (overrides --mqtt)")
    parser.add_argument("--port", type=int, help="broker port (overrides --mqtt)")
    parser.add_argument("--device-id", default="", help="device id (default: thing name or host name)")
    parser.add_argument("--camera-id", default="manual", help="camera id (default: manual)")
    parser.add_argument("--topic-prefix", default=DEFAULT_TOPIC_PREFIX, help="topic prefix (default: faces)")
    parser.add_argument("--repeat", type=int, help="send the set this many times, at least 1 (new face ids)")
    parser.add_argument("--rate", type=float, help="messages per second (default 0: as fast as acked)")
    parser.add_argument("--legacy", action="store_true",
                        help="send bare images without properties, as the old publishers did")
    send_outbox.add_arguments(parser)


def _load_images(paths: list[Path]) -> list[tuple[Path, bytes, tuple[int, int]]]:
    images = []
    problems = []
    for path in paths:
        try:
            data = path.read_bytes()
        except OSError as exc:
            problems.append((str(path), exc.strerror or str(exc)))
            continue
        size = image_size(data)
        if sniff_content_type(data) is None or size is None:
            problems.append((str(path), "not a readable JPEG or PNG"))
            continue
        images.append((path, data, size))
    if problems:
        raise ConfigError("send", problems, hint="check the image paths")
    return images


def _settings(args: argparse.Namespace) -> tuple[MqttSettings, _SendOptions]:
    """The connection and the other flags, each checked by the model its values belong to."""
    mqtt = read_config_source(args.mqtt, "--mqtt") if args.mqtt else {}
    settings = with_flags(_SendConfig, "send", {"--host": ("mqtt.host", args.host), "--port": ("mqtt.port", args.port)},
                          base={"mqtt": mqtt}).mqtt
    if args.host is not None or args.port is not None:  # TCP, not the EdgeBroker's socket
        settings = settings.model_copy(update={"socket_path": ""})
    options = with_flags(_SendOptions, "send", {
        "--repeat": ("repeat", args.repeat), "--rate": ("rate", args.rate),
        "--receipt-timeout": ("receiptTimeoutSeconds", args.receipt_timeout),
        "--redeliver-after": ("redeliverAfterSeconds", args.redeliver_after),
        "--topic-prefix": ("topicPrefix", args.topic_prefix),
        "--bridge-client-id": ("bridgeClientId", getattr(args, "bridge_client_id", None))}, env={})
    found: list[tuple[str, str, bool]] = []
    mqtt_problems(settings, found, "--mqtt")
    if found:
        raise ConfigError("send", [(key, reason) for key, reason, _ in found], hint="fix the path in --mqtt")
    return settings, options


def run(args: argparse.Namespace) -> int:
    """Publish each image as one contract v1 face message (QoS 1) and wait for every PUBACK. Connection
    settings are the `mqtt` section of a component configuration (JSON string or file), overridable by
    --host/--port and FACECAP_MQTT__* environment variables."""
    from ..mqtt import MqttClient, local_settings  # here: awscrt stays out of the others' processes (cli.py)

    setup_logging()
    settings, options = _settings(args)
    if not args.images and not args.outbox:
        raise ConfigError("send", [("IMAGE", "give at least one image (or --outbox DIR to finish its faces)")])
    images = _load_images(args.images)
    device = resolve_device_id(args.device_id)
    face_topic(device, args.camera_id, args.topic_prefix)  # validates both ids before connecting
    # An MqttConnectError (a socket path, a refused login, nothing listening) ends in one line (cli.py).
    settings = local_settings(settings, "sender")
    if args.outbox:
        faces = send_outbox.outbox_faces(images, args, device, options.repeat)
        return send_outbox.send_with_outbox(args, settings, device, faces, rate=options.rate,
                                            receipt_timeout=options.receipt_timeout_seconds,
                                            redeliver_after=options.redeliver_after_seconds)
    client = MqttClient(settings, f"facecap-send-{device}-{int(time.time())}")
    client.start()
    futures = []
    interval = 1.0 / options.rate if options.rate > 0 else 0.0
    try:
        for round_ in range(options.repeat):
            for index, (path, data, size) in enumerate(images):
                props: tuple[tuple[str, str], ...] = ()
                content_type: str | None = None
                if args.legacy:
                    topic = face_topic(device, args.camera_id, args.topic_prefix)
                else:
                    face = send_outbox.image_face(data, size, round_ * len(images) + index, args, device)
                    topic, props, content_type = face.topic, face.user_properties, face.content_type
                futures.append((path, client.publish(topic, data, content_type=content_type, user_properties=props)))
                if interval:
                    time.sleep(interval)
        failed = 0
        for path, future in futures:
            try:
                assert future is not None
                future.result(timeout=settings.connect_timeout_seconds + 30)
            except (FacecapError, TimeoutError) as exc:
                failed += 1
                log.error("%s: %s", path, exc)
        log.info("sent %d face messages to %s, %d failed", len(futures) - failed, settings.describe(), failed)
        return 1 if failed else 0
    finally:
        client.stop()
