"""The FaceDetector's runner (DetectorRunner): builds camera, detector, tracker, publisher and MQTT client from one
configuration, runs them until stopped, and shuts down in order (flush in-flight faces, then offline)."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

import cv2

from ..config import resolve_device_id
from ..contract import new_face_id, status_topic
from ..mqtt import MqttClient, StatusTopic, local_settings
from .camera import Camera, CameraUnavailableError, check_source
from .capture import CaptureLoop, Shot, StatsReporter, keep_shot
from .config import DetectorConfig, resolve_model_path
from .crop import CropSettings
from .detection import FaceDetector, create_detector
from .publisher import FacePublisher
from .tracking import Tracker, TrackerSettings

log = logging.getLogger(__name__)


def build_detector(config: DetectorConfig, cli_model: str | None) -> FaceDetector:
    detection = config.detection
    model_path, origin = resolve_model_path(detection.model_path, cli_model)
    return create_detector(detection.detector, model_path, origin, score_threshold=detection.score_threshold,
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


@dataclass
class DetectorRunner:
    """The FaceDetector: its configuration and its collaborators, which `build` makes from the
    configuration (a test can pass its own to the constructor)."""

    config: DetectorConfig
    camera: Camera
    client: MqttClient
    publisher: FacePublisher
    tracker: Tracker[Shot]
    loop: CaptureLoop

    @classmethod
    def build(cls, config: DetectorConfig, cli_model: str | None = None,
              client: MqttClient | None = None) -> DetectorRunner:
        """Everything that can be checked before starting is checked here, raising ConfigError (a missing
        file, model or certificate) or MqttError. `client`: an already built client (default: the one the
        configuration describes)."""
        device_id = resolve_device_id(config.device_id)
        check_source(config.camera)
        if config.detection.threads:
            cv2.setNumThreads(config.detection.threads)
        detector = build_detector(config, cli_model)
        if client is None:
            client = MqttClient(local_settings(config.mqtt, "detector"), f"{device_id}-detector-{config.camera_id}",
                                status=StatusTopic(status_topic(device_id, "detector")))
        publisher = FacePublisher(client, topic_prefix=config.topic_prefix,
                                  max_payload_bytes=config.output.max_payload_bytes,
                                  max_queued_bytes=config.output.max_queued_bytes)
        tracker = build_tracker(config)
        loop = CaptureLoop(detector=detector, tracker=tracker, publisher=publisher,
                           crop_settings=crop_settings(config), device_id=device_id,
                           camera_id=config.camera_id, min_face_size=config.detection.min_face_size,
                           edge_margin=config.tracking.edge_margin)
        camera = Camera(config.camera)
        log.info("detector %s on %s, device %s camera %s, %s mode, OpenCV %s", detector.name, camera.description,
                 device_id, config.camera_id, config.tracking.mode, cv2.__version__)
        return cls(config, camera, client, publisher, tracker, loop)

    def figures(self) -> dict[str, object]:
        """The stats line's figures: counters since start, plus the current state."""
        published = self.publisher.stats
        return {
            "frames": self.loop.stats.frames, "faces": self.loop.stats.faces,
            "tracks": len(self.tracker.tracks), "tracks_total": self.tracker.stats.tracks_started,
            "sent": self.loop.stats.sent, "published": published.published, "dropped": published.dropped,
            "failed": published.failed, "in_flight": self.client.in_flight, "queued_bytes": published.queued_bytes,
            "connected": "yes" if self.client.connected else "no",
            "camera_outages": self.camera.stats.outages, "skipped": self.camera.stats.skipped,
        }

    def run(self, stop: threading.Event) -> int:
        """Capture until `stop` is set or a file source ends: 0, or 1 when the camera was given up."""
        # No waiting for the broker: faces queue (bounded) while it is away, and the client reconnects.
        self.client.start(wait=False)
        reporter = StatsReporter(self.config.stats_interval_seconds, self.figures)
        reporter.start()
        code = 0
        try:
            self.loop.run(self.camera.frames(stop))
        except CameraUnavailableError as exc:
            log.error("%s", exc)
            code = 1
        finally:
            reporter.stop()
            timeout = self.config.shutdown_timeout_seconds
            if not self.client.stop(timeout):
                log.warning("stopped with %d faces still unacknowledged after %.0f s", self.client.in_flight, timeout)
            reporter.report()
        log.info("detector stopped")
        return code
