"""The FaceDetector's runner (DetectorRunner): builds, from one configuration, one feed per camera (camera, capture
thread, frame queue, tracker, capture loop), a pool of detection workers with a model each, and the one
publisher and MQTT client every camera shares; runs them until stopped, and shuts down in order (flush
in-flight faces, then offline). docs/detector.md describes the threads."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone

import cv2

from ..config import resolve_device_id
from ..contract import format_time, new_face_id, stats_topic, status_topic
from ..errors import ConfigError
from ..greengrass.component import ComponentIpc
from ..logs import setup_logging
from ..mqtt import MqttClient, StatusTopic, local_settings
from ..outbox import OutboxPublisher
from .camera import Camera, check_source
from .capture import CaptureLoop, Shot, StatsReporter, keep_shot
from .config import CameraEntry, DetectorConfig, camera_key
from .crop import CropSettings
from .detection import FaceDetector, create_detector
from .durable import open_outbox
from .feeds import BROKEN, CameraFeed
from .model import find_model
from .publisher import FacePublisher
from .scheduling import DetectionPool, FrameScheduler
from .tracking import Tracker, TrackerSettings

log = logging.getLogger(__name__)

_CAPTURE_JOIN_SECONDS = 0.5


def build_detector(config: DetectorConfig, cli_model: str | None) -> FaceDetector:
    detection = config.detection
    model = find_model(detection.model_path, cli_model)
    return create_detector(detection.detector, model.path, model.origin, score_threshold=detection.score_threshold,
                           nms_threshold=detection.nms_threshold, scaling=detection.scaling(),
                           min_face_size=detection.min_face_size, max_faces=detection.max_faces,
                           haar_cascade_path=detection.haar_cascade_path)


def build_tracker(config: DetectorConfig) -> Tracker[Shot]:
    tracking = config.tracking
    settings = TrackerSettings(
        mode=tracking.mode, resend_interval=tracking.resend_interval_seconds,
        min_improvement=tracking.min_improvement, lost_after=tracking.lost_after_seconds,
        min_hits=tracking.min_hits, iou_threshold=tracking.iou_threshold,
        every_min_interval=tracking.every_min_interval_seconds, max_tracks=tracking.max_tracks,
        first_shot=tracking.first_shot, first_shot_min_score=tracking.first_shot_min_score,
        first_shot_min_sharpness=tracking.first_shot_min_sharpness,
    )
    return Tracker(settings, new_id=new_face_id, keep=keep_shot)


def crop_settings(config: DetectorConfig) -> CropSettings:
    output = config.output
    return CropSettings(padding=output.padding, size=output.size, format=output.format,
                        jpeg_quality=output.jpeg_quality, png_compression=output.png_compression,
                        max_payload_bytes=output.max_payload_bytes)


def worker_count(config: DetectorConfig, cameras: int) -> int:
    """detection.workers, or one per camera and at most one per core."""
    return config.detection.workers or max(1, min(cameras, os.cpu_count() or 1))


def checked_cameras(config: DetectorConfig) -> list[tuple[CameraEntry, str]]:
    """Each camera with the reason it can never work ("" when it may). A camera that cannot work is reported
    and left out while the others run; when none is left, that is a configuration error (exit 2)."""
    checked: list[tuple[CameraEntry, str]] = []
    problems: list[tuple[str, str]] = []
    for index, entry in enumerate(config.camera_list()):
        try:
            check_source(entry, camera_key(config, index))
            checked.append((entry, ""))
        except ConfigError as exc:
            problems += exc.problems
            checked.append((entry, "; ".join(f"{key}: {reason}" for key, reason in exc.problems)))
    if all(reason for _, reason in checked):
        raise ConfigError("detector", problems)
    for entry, reason in checked:
        if reason:
            log.error("camera %s left out: %s", entry.camera_id, reason)
    return checked


@dataclass
class DetectorRunner:
    """The FaceDetector: its configuration and its collaborators, which `build` makes from the
    configuration (a test can pass its own to the constructor)."""

    config: DetectorConfig
    client: MqttClient
    publisher: FacePublisher
    feeds: list[CameraFeed]
    detectors: list[FaceDetector]
    condition: threading.Condition
    # The durable outbox behind the publisher (None when outbox.enabled is false); it owns the client's
    # start and stop then, since it subscribes to the receipts and the bridge state.
    outbox: OutboxPublisher | None = None
    cli_model: str | None = None
    ipc: ComponentIpc[DetectorConfig] | None = field(default=None, repr=False)

    @classmethod
    def build(cls, config: DetectorConfig, cli_model: str | None = None,
              client: MqttClient | None = None, ipc: ComponentIpc[DetectorConfig] | None = None) -> DetectorRunner:
        """Everything that can be checked before starting is checked here, raising ConfigError (a missing
        file, model or certificate) or MqttError. `client`: an already built client (default: the one the
        configuration describes)."""
        device_id = resolve_device_id(config.device_id)
        cameras = checked_cameras(config)
        workers = worker_count(config, len(cameras))
        # Several workers already use the cores: OpenCV's own threads in each would only contend.
        threads = config.detection.threads or (1 if workers > 1 else 0)
        if threads:
            cv2.setNumThreads(threads)
        detectors = [build_detector(config, cli_model) for _ in range(workers)]
        if client is None:
            name = f"{device_id}-detector" + (f"-{cameras[0][0].camera_id}" if len(cameras) == 1 else "")
            client = MqttClient(local_settings(config.mqtt, "detector"), name,
                                status=StatusTopic(status_topic(device_id, "detector")))
        outbox = open_outbox(config.outbox, client, device_id)
        publisher = FacePublisher(client, topic_prefix=config.topic_prefix,
                                  max_payload_bytes=config.output.max_payload_bytes,
                                  max_queued_bytes=config.output.max_queued_bytes, outbox=outbox)
        condition = threading.Condition()
        feeds = [build_feed(config, entry, detectors[0], publisher, device_id=device_id, condition=condition,
                            broken=bool(reason))
                 for entry, reason in cameras]
        log.info("detector %s, %d worker(s), device %s, %s mode, OpenCV %s", detectors[0].name, workers, device_id,
                 config.tracking.mode, cv2.__version__)
        for feed in feeds:
            log.info("camera %s: %s%s", feed.camera_id, feed.camera.description, " (left out)" if feed.ended else "")
        runner = cls(config, client, publisher, feeds, detectors, condition, outbox=outbox, cli_model=cli_model,
                     ipc=ipc)
        if ipc is not None:
            ipc.on_change(runner.apply_live)
        return runner

    def apply_live(self, config: DetectorConfig, keys: frozenset[str]) -> None:
        """Take a deployment's new detection, tracking, output, logging or stats settings without a restart, for
        every camera and every worker. Each part is replaced whole between two frames (an attribute or list item
        swap), never half-changed."""
        if "detection" in keys:
            # Each worker reads its own slot at every job (scheduling.py), so the new models take over there.
            self.detectors[:] = [build_detector(config, self.cli_model) for _ in self.detectors]
        for feed in self.feeds:
            loop = feed.loop
            if "detection" in keys:
                loop.detector = self.detectors[0]
                loop.min_face_size = config.detection.min_face_size
            if "tracking" in keys:
                loop.tracker.settings = build_tracker(config).settings
                loop.edge_margin = config.tracking.edge_margin
            if "output" in keys:
                loop.crop_settings = crop_settings(config)
        if "output" in keys:
            self.publisher.set_limits(config.output.max_payload_bytes, config.output.max_queued_bytes)
        if "logging" in keys:
            setup_logging(config.logging.level, config.logging.format)
        self.config = config

    def figures(self) -> list[dict[str, object]]:
        """The stats lines' figures, counters since start plus the current state: one line per camera when
        there are several, then the line of the whole detector (the one line with a single camera)."""
        cameras = [feed.figures() for feed in self.feeds]

        def total(key: str) -> int:
            return sum(int(str(figures[key])) for figures in cameras)

        published = self.publisher.stats
        whole: dict[str, object] = {
            "frames": total("frames"), "faces": total("faces"), "tracks": total("tracks"),
            "tracks_total": total("tracks_total"), "sent": total("sent"), "published": published.published,
            "dropped": published.dropped, "failed": published.failed, "in_flight": self.client.in_flight,
            "queued_bytes": published.queued_bytes, "connected": "yes" if self.client.connected else "no",
            "camera_outages": total("camera_outages"), "skipped": total("skipped"),
            "queue_dropped": total("queue_dropped"), "tracks_refused": total("tracks_refused"),
            "encode_failures": total("encode_failures"), "score_threshold": self.config.detection.score_threshold,
            **self._outbox_figures(),
        }
        if len(cameras) == 1:
            return [whole]
        return [*cameras, {**whole, "cameras": len(cameras)}]

    def _outbox_figures(self) -> dict[str, object]:
        if self.outbox is None or self.publisher.committer is None:
            return {}
        counts = self.outbox.outbox.counts()
        sender = self.outbox.stats
        return {"published": sender.published, "failed": sender.failed,
                "committed": self.publisher.committer.stats.committed, "pending": counts.pending,
                "pending_bytes": counts.pending_bytes, "delivered": counts.delivered, "evicted": counts.evicted,
                "refused": counts.refused, "republished": sender.republished, "unsaved": sender.unsaved,
                "lost": sender.lost,
                "outbox_errors": sender.outbox_errors, "awaiting_receipt": len(self.outbox.window),
                "bridge": {True: "up", False: "down", None: "unknown"}[self.outbox.bridge.up]}

    def publish_stats(self, figures: dict[str, object]) -> None:
        """The stats, retained on facecap/<device>/detector/stats (the bridge carries them to the cloud), and
        to AWS IoT Core when iotCoreStats is on."""
        # intervalSeconds: how often they come, so `facecap fleet` can tell a slow reporter from a dead one.
        payload = json.dumps({"at": format_time(datetime.now(timezone.utc)),
                              "intervalSeconds": self.config.stats_interval_seconds, **figures}).encode()
        topic = stats_topic(self.feeds[0].loop.device_id, "detector")
        # Never blocks the stats thread: with every publish slot taken the stats wait for the next round.
        self.client.publish(topic, payload, retain=True, content_type="application/json", block=False)
        if self.config.iot_core_stats and self.ipc is not None:
            self.ipc.ipc.publish_to_iot_core(topic, payload)

    def run(self, stop: threading.Event) -> int:
        """Capture until `stop` is set or every camera has ended: 0; 1 when a camera was given up; 2 when a
        camera's source could not be read."""
        # No waiting for the broker: faces queue (bounded) while it is away, and the client reconnects.
        if self.outbox is not None:
            self.outbox.start(wait=False)  # connects the client, then publishes every pending face again
        else:
            self.client.start(wait=False)
        reporter = StatsReporter(lambda: self.config.stats_interval_seconds, self.figures, publish=self.publish_stats)
        reporter.start()
        try:
            for feed in self.feeds:
                if not feed.ended:
                    feed.start(stop)
            if self.ipc is not None:
                # Not the first frame: a camera unplugged at boot, or an IP camera still booting after a power
                # cut, would keep the component STARTING past its Startup timeout, and after three of those
                # Greengrass marks it BROKEN and never starts it again. A camera outage is retried, logged and
                # counted (camera_outages); one given up (giveUpAfterSeconds) is reported ERRORED.
                self.ipc.report_when_ready(lambda: self.client.connected, stop,
                                           "the local broker, the cameras opening")
            DetectionPool(FrameScheduler(self.feeds, self.condition), self.detectors).run(stop)
        finally:
            stop.set()  # every camera is finished: end capture threads still waiting on a stream
            # One budget for the whole stop: Greengrass kills the component 5 s after SIGTERM.
            deadline = time.monotonic() + self.config.shutdown_timeout_seconds
            # Capture threads hold nothing to save; one stuck in a stream's read gets a moment, not seconds.
            joined_by = time.monotonic() + _CAPTURE_JOIN_SECONDS
            for feed in self.feeds:
                feed.join(max(0.0, joined_by - time.monotonic()))
            reporter.stop()
            self._shut_down(deadline)
            reporter.report()
        log.info("detector stopped")
        code = max(feed.code for feed in self.feeds)
        if code and self.ipc is not None:
            self.ipc.report_errored(", ".join(f"camera {feed.camera_id} {feed.state}" for feed in self.feeds
                                              if feed.code))
        return code

    def capturing(self) -> bool:
        """Whether a camera's capture thread is still running (after run: stuck inside OpenCV)."""
        return any(feed.capturing for feed in self.feeds)

    def _shut_down(self, deadline: float) -> None:
        def left() -> float:
            return max(0.1, deadline - time.monotonic())

        if not self.publisher.close(left()):
            log.warning("faces still waiting for their commit to the outbox at the shutdown deadline")
        if self.outbox is not None:
            # Faces not yet acknowledged stay in the outbox and go out again at the next start.
            self.outbox.stop(left())
            self.outbox.outbox.close()
        elif not self.client.stop(left()):
            log.warning("stopped with %d faces still unacknowledged at the shutdown deadline", self.client.in_flight)


def build_feed(config: DetectorConfig, entry: CameraEntry, detector: FaceDetector, publisher: FacePublisher,
               *, device_id: str, condition: threading.Condition, broken: bool = False) -> CameraFeed:
    """A camera's feed with its own tracker and capture loop (tracks never mix across cameras)."""
    loop = CaptureLoop(detector=detector, tracker=build_tracker(config), publisher=publisher,
                       crop_settings=crop_settings(config), device_id=device_id, camera_id=entry.camera_id,
                       min_face_size=config.detection.min_face_size, edge_margin=config.tracking.edge_margin)
    feed = CameraFeed(entry.camera_id, Camera(entry), loop, entry.queue_frames, condition)
    if broken:
        feed.ended, feed.finished, feed.code = True, True, BROKEN
    return feed
