"""Run the FaceLogger: subscribe to the local faces topic and log until told to stop."""

from __future__ import annotations

import json
import logging
import threading
import time
from concurrent.futures import TimeoutError as FutureTimeout
from datetime import datetime, timezone

from ..config import resolve_device_id
from ..contract import format_time, stats_topic, status_topic
from ..greengrass.component import ComponentIpc
from ..logs import setup_logging
from ..mqtt import MqttClient, ReceivedMessage, StatusTopic, local_settings
from .config import LoggerConfig
from .facelog import FaceLog

log = logging.getLogger(__name__)
# Faces get their own logger name, so an operator can filter the face lines from the service messages.
faces_log = logging.getLogger("facecap.faces")

WAITING_NOTE_SECONDS = 10.0


class FaceLoggerRunner:
    """A FaceLog fed by an MQTT subscription, with the retained status topic and a summary timer.

    `client` is for tests: an already built client whose handler is this runner's `handle` (the default
    is the client the component runs with, built from the configuration)."""

    def __init__(self, config: LoggerConfig, client: MqttClient | None = None,
                 ipc: ComponentIpc[LoggerConfig] | None = None) -> None:
        self.config = config
        self.ipc = ipc
        self.subscribed = threading.Event()
        if ipc is not None:
            ipc.on_change(self.apply_live)
        self.device_id = resolve_device_id(config.device_id)
        self.facelog = FaceLog(topic_prefix=config.topic_prefix, max_payload_bytes=config.max_payload_bytes)
        self.client = client if client is not None else MqttClient(
            local_settings(config.mqtt, "logger"),
            f"facecap-logger-{self.device_id}",
            status=StatusTopic(status_topic(self.device_id, "logger")),
            on_message=self.handle,
        )

    def handle(self, message: ReceivedMessage) -> None:
        # Runs on the client's dispatcher thread; FaceLog turns every contract failure into a line, so
        # nothing a publisher sends can stop this thread.
        verdict = self.facelog.handle(message.topic, message.payload, message.content_type,
                                      message.user_properties)
        if verdict.accepted:
            faces_log.info(verdict.line)
        else:
            faces_log.warning(verdict.line)

    def apply_live(self, config: LoggerConfig, keys: frozenset[str]) -> None:
        """The logging settings and the summary interval (from the next summary on), without a restart."""
        if "logging" in keys:
            setup_logging(config.logging.level, config.logging.format)
        self.config = config

    def publish_stats(self) -> None:
        """The counters, retained on facecap/<device>/logger/stats (the bridge carries them to the cloud)."""
        # intervalSeconds: how often they come, so `facecap fleet` can tell a slow reporter from a dead one.
        figures = {"at": format_time(datetime.now(timezone.utc)), "faces": self.facelog.total_faces,
                   "rejected": self.facelog.total_rejected, "intervalSeconds": self.config.summary_interval_seconds}
        self.client.publish(stats_topic(self.device_id, "logger"), json.dumps(figures).encode(), retain=True,
                            content_type="application/json", block=False)

    def run(self, stop: threading.Event) -> int:
        topic_filter = f"{self.config.topic_prefix}/#"
        # Greengrass may start us before the broker listens: keep retrying (the client backs off) rather
        # than exiting, which after three failures would leave the component BROKEN.
        self.client.start(wait=False)
        if self.ipc is not None:
            self.ipc.report_when_ready(self.subscribed.is_set, stop, f"the subscription to {topic_filter}")
        waited = time.monotonic()
        while not self.client.wait_connected(1.0):
            if stop.is_set():
                self.client.stop(timeout=1)
                return 0
            if time.monotonic() - waited >= WAITING_NOTE_SECONDS:
                log.warning("still waiting for the broker at %s", self.config.mqtt.describe())
                waited = time.monotonic()
        try:
            self.client.subscribe(topic_filter)
            self.subscribed.set()
        except FutureTimeout:  # not the builtin TimeoutError before Python 3.11
            # The link dropped right after connecting; the client subscribes again when it reconnects.
            log.warning("no SUBACK for %s yet; it is renewed at the next connection", topic_filter)
        log.info("logging faces on %s; summary every %g s", topic_filter, self.config.summary_interval_seconds)
        while not stop.wait(self.config.summary_interval_seconds):
            log.info(self.facelog.summary())
            self.publish_stats()
        log.info(self.facelog.summary())
        self.client.stop(timeout=5)
        log.info("stopped after %d faces and %d rejected messages", self.facelog.total_faces,
                 self.facelog.total_rejected)
        return 0
