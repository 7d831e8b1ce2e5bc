"""`facecap send IMAGE...`: publish image files as face messages, for trying the pipeline by hand."""

from __future__ import annotations

import argparse
import logging
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..config import ConfigModel, load_config, read_config_source, resolve_device_id
from ..contract import DEFAULT_TOPIC_PREFIX, FaceMetadata, build_message, face_topic, sniff_content_type
from ..errors import ConfigError, FacecapError, MqttConnectError
from ..imagesize import image_size
from ..logs import setup_logging
from ..mqtt import MqttClient, MqttSettings, local_settings

log = logging.getLogger(__name__)


class _SendConfig(ConfigModel):
    """Only the connection, so FACECAP_MQTT__* variables apply as they do for the components."""

    mqtt: MqttSettings = MqttSettings()


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "send",
        help="publish JPEG/PNG files as face messages",
        description="Publish each image as one contract v1 face message (QoS 1) and wait for every PUBACK. "
        "Connection settings are the `mqtt` section of a component configuration (JSON string or file), "
        "overridable by --host/--port and FACECAP_MQTT__* environment variables.",
    )
    parser.add_argument("images", nargs="+", type=Path, metavar="IMAGE", help="JPEG or PNG files")
    parser.add_argument("--mqtt", metavar="JSON|FILE", help="MQTT settings, e.g. '{\"host\": \"...\", \"tls\": true}'")
    parser.add_argument("--host", help="broker host (overrides --mqtt)")
    parser.add_argument("--port", type=int, help="broker port (overrides --mqtt)")
    parser.add_argument("--device-id", default="", help="device id (default: thing name or host name)")
    parser.add_argument("--camera-id", default="manual", help="camera id (default: manual)")
    parser.add_argument("--topic-prefix", default=DEFAULT_TOPIC_PREFIX, help="topic prefix (default: faces)")
    parser.add_argument("--repeat", type=int, default=1, help="send the set this many times (new face ids)")
    parser.add_argument("--rate", type=float, default=0.0, help="messages per second (0: as fast as acked)")
    parser.add_argument("--legacy", action="store_true",
                        help="send bare images without properties, as the old publishers did")
    parser.set_defaults(func=run)


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
        raise ConfigError("send", problems)
    return images


def run(args: argparse.Namespace) -> int:
    setup_logging()
    mqtt = read_config_source(args.mqtt) if args.mqtt else {}
    settings = load_config(_SendConfig, "send", {"mqtt": mqtt}).mqtt
    overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    if overrides:  # --host/--port: TCP, not the EdgeBroker's socket
        settings = settings.model_copy(update={**overrides, "socket_path": ""})
    images = _load_images(args.images)
    device = resolve_device_id(args.device_id)
    face_topic(device, args.camera_id, args.topic_prefix)  # validates both ids before connecting
    try:
        settings = local_settings(settings, "sender")
        client = MqttClient(settings, f"facecap-send-{device}-{int(time.time())}")
        client.start()
    except MqttConnectError as exc:  # one line naming what to fix (a socket path, a refused login, ...)
        log.error("%s", exc)
        return 1
    futures = []
    interval = 1.0 / args.rate if args.rate > 0 else 0.0
    try:
        for round_ in range(args.repeat):
            for index, (path, data, (width, height)) in enumerate(images):
                props: tuple[tuple[str, str], ...] = ()
                content_type: str | None = None
                if args.legacy:
                    topic = face_topic(device, args.camera_id, args.topic_prefix)
                else:
                    face = build_message(data, FaceMetadata(
                        device_id=device, camera_id=args.camera_id, captured_at=datetime.now(timezone.utc),
                        bbox=(0, 0, width, height), score=1.0, frame=round_ * len(images) + index,
                        track_id="", detector="send"), topic_prefix=args.topic_prefix)
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
