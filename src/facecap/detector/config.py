"""Configuration of the FaceDetector component (key `detector` in config.COMPONENT_MODELS).

There is deliberately no top-level key `model`: the Greengrass recipe passes the model's artifact path in
FACECAP_MODEL, which the environment overlay would otherwise take for such a key.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator
from typing_extensions import Self

from ..config import (
    ComponentConfig,
    ConfigModel,
    LoggingSettings,
    OpenFraction,
    Seconds,
    SecondsOrOff,
    WaitSeconds,
    as_value_error,
)
from ..contract import DEFAULT_MAX_PAYLOAD_BYTES, check_id
from ..mqtt import MqttSettings
from ..outbox.config import OutboxSettings
from .scaling import Scaling

MODEL_ENV = "FACECAP_MODEL"
# The slowest frame rate: a longer frame period would overflow the frame clock and its waits.
_LEAST_FPS = 0.01

CameraKind = Literal["auto", "v4l2", "file", "url", "gstreamer"]
DetectorKind = Literal["auto", "yunet", "haar"]


class CameraSettings(ConfigModel):
    """Where frames come from, and how a lost camera is reopened."""

    source: str = Field("0", description="What to read: a V4L2 device index (`0`) or path (`/dev/video0`, or "
                                         "a stable `/dev/v4l/by-id/...` name when there are several cameras), a "
                                         "video file, an RTSP/HTTP URL, or a GStreamer pipeline ending in `appsink`.")
    kind: CameraKind = Field(
        "auto", description="How to read `source`; `auto` decides from its form (digits, `://`, `!`, path)."
    )
    width: int = Field(0, ge=0, description="Frame width to request from a V4L2 camera; 0 keeps the driver's.")
    height: int = Field(0, ge=0, description="Frame height to request from a V4L2 camera; 0 keeps the driver's.")
    fps: float = Field(0, ge=0, description="Frame rate to request from a V4L2 camera; 0 keeps the driver's.")
    fourcc: str = Field(
        "", pattern=r"^(|[ -~]{4})$", description="Pixel format to request from a V4L2 camera, e.g. `MJPG`."
    )
    max_fps: float = Field(
        15, ge=0, le=1000,
        description="Frames processed per second at most (0: no cap). A live camera's frames in between "
        "are skipped; a file is paced to this rate.",
    )
    loop: bool = Field(False, description="Play a video file again from the start when it ends.")
    timeout_seconds: WaitSeconds = Field(
        10,
        description="How long opening or reading a network stream may hang before it counts as lost."
    )
    reconnect_min_seconds: WaitSeconds = Field(0.5, description="First wait before reopening a lost camera.")
    reconnect_max_seconds: WaitSeconds = Field(30, description="Longest wait between reopening attempts.")
    give_up_after_seconds: SecondsOrOff = Field(
        0,
        description="Give the camera up when it stays unavailable this long (0: retry forever); the detector "
        "exits with an error when its last camera is given up.",
    )
    queue_frames: int = Field(
        4, ge=1, le=100,
        description="Frames waiting for detection at most; when detection falls behind, the oldest is dropped "
        "and counted (a file read with maxFps 0 waits instead, so it loses no frame).",
    )

    @field_validator("max_fps")
    @classmethod
    def _check_max_fps(cls, value: float) -> float:
        if 0 < value < _LEAST_FPS:  # a frame period beyond what a clock or a wait can hold
            raise ValueError(f"must be 0 (no cap) or at least {_LEAST_FPS}")
        return value

    @field_validator("source")
    @classmethod
    def _check_source(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value.strip()

    ordered_fields = (("reconnect_min_seconds", "reconnect_max_seconds"),)


class CameraEntry(CameraSettings):
    """One camera of `cameras`: its id and every key of the `camera` section."""

    camera_id: str = Field(description="Camera id in topics, [A-Za-z0-9._-]{1,64}; unique among `cameras`.")
    source: str = Field(description="As `camera.source`; required here.")

    @field_validator("camera_id")
    @classmethod
    def _check_camera_id(cls, value: str) -> str:
        return as_value_error(check_id, "camera-id", value)


class DetectionSettings(ConfigModel):
    detector: DetectorKind = Field(
        "auto",
        description="`yunet` (needs the model and OpenCV >= 4.8), `haar`, or `auto`: YuNet when possible, "
        "else Haar with a warning.",
    )
    model_path: str = Field(
        "", description=f"YuNet ONNX model file; empty uses `--model`, then the {MODEL_ENV} environment variable, "
        "then $FACECAP_SHARED/models, then a copy in ~/.cache/facecap; else Haar."
    )
    score_threshold: OpenFraction = Field(0.7, description="YuNet confidence below which a face is ignored.")
    nms_threshold: OpenFraction = Field(0.3, description="YuNet overlap above which boxes are merged.")
    # Old configurations set a number here (416 was the default) and keep their meaning.
    # The scale comes from min_face_size (scaling.py): YuNet sees the smallest wanted face at modelFaceSize
    # pixels whatever the frame size. 28 for 40 keeps >= 95 % of the dev faces at 640x480, 1280x720 and
    # 1920x1080 (26, today's 416-of-640, falls to 94.7 % at 1280x720); docs/detector.md has the figures.
    width: Annotated[int, Field(ge=0)] | Literal["auto"] = Field(
        "auto",
        description="`auto`: the detection scale follows `minFaceSize` and `modelFaceSize`, whatever the frame "
        "size. A number fixes the detection width instead: frames wider than it are scaled down to it (0: full "
        "frame). With the defaults a 640x480 frame is detected at 448x336 (the old fixed default was 416) and "
        "a 1920x1080 one at 1344x756; a fixed width loses small faces on HD cameras (416 on 1920x1080 shrinks "
        "a 40-px face to 9 px).",
    )
    min_face_size: int = Field(
        40, ge=1,
        description="Faces smaller than this many pixels (shorter side, full frame) are ignored; the frame is "
        "scaled for detection so that faces of this size are still found. Raise it to save CPU on HD cameras "
        "(cost falls with its square).",
    )
    model_face_size: int = Field(
        28, ge=8, le=200,
        description="Pixels a face of `minFaceSize` is shrunk to for YuNet (the size it still finds "
        "reliably); detection runs at modelFaceSize / minFaceSize of the frame (never upscaled).",
    )
    max_faces: int = Field(50, ge=1, description="Most faces kept per frame (the most confident).")
    workers: int = Field(
        0, ge=0,
        description="Detection threads, each with its own model, shared by all cameras (0: one per camera, at "
        "most one per CPU core).",
    )
    threads: int = Field(
        0, ge=0,
        description="OpenCV threads (0: OpenCV's default with one detection worker, 1 with several, since the "
        "workers already use the cores).",
    )
    haar_cascade_path: str = Field(
        "", description="Haar cascade XML for the fallback; empty uses the one shipped with OpenCV."
    )

    def scaling(self) -> Scaling:
        return Scaling(None if self.width == "auto" else self.width, self.min_face_size, self.model_face_size)


class TrackingSettings(ConfigModel):
    mode: Literal["best", "every"] = Field(
        "best",
        description="`best`: one best shot per face track (when it ends, plus re-sends); `every`: each "
        "detection, rate-limited per face, like the old publishers.",
    )
    resend_interval_seconds: SecondsOrOff = Field(
        10,
        description="While a face stays, send its best shot again at most this often, and only if it got "
        "better (0: send only when the track ends).",
    )
    min_improvement: float = Field(
        0.1, ge=0, description="Relative quality gain a re-send needs over the shot already sent."
    )
    lost_after_seconds: Seconds = Field(
        1.0, description="A track ends when its face has not been seen for this long."
    )
    min_hits: int = Field(
        3, ge=1, description="Detections a track needs before its best shot is sent (suppresses flickers)."
    )
    iou_threshold: OpenFraction = Field(
        0.2, description="Least overlap between a track's predicted box and a detection to match."
    )
    every_min_interval_seconds: SecondsOrOff = Field(
        0.2, description="In `every` mode, least time between two messages of the same face (0: none)."
    )
    max_tracks: int = Field(32, ge=1, description="Most faces followed at once (bounds memory).")
    first_shot: bool = Field(
        False,
        description="In `best` mode, also send each track's first good shot at once (once it has `minHits` "
        "detections), so a consumer can react while the person is still there; the best shot is still sent "
        "when the track ends. The two are separate faces with the same track id and the property `shot` = "
        "`first` or `best`. Off by default: it doubles the messages per person.",
    )
    first_shot_min_score: float = Field(
        0.8, gt=0, le=1, description="Least detector score of a first shot (with firstShot)."
    )
    first_shot_min_sharpness: float = Field(
        100, ge=0,
        description="Least sharpness (variance of the Laplacian of the face at 64x64 grey; sharp faces ~800, "
        "motion-blurred ~300) of a first shot; it must also be at least `detection.minFaceSize` and not touch "
        "the frame edge (with firstShot).",
    )
    edge_margin: int = Field(
        2, ge=0, description="A face closer than this many pixels to the frame edge counts as cut off."
    )


class OutputSettings(ConfigModel):
    format: Literal["jpeg", "png"] = Field("jpeg", description="Encoding of the crop.")
    jpeg_quality: int = Field(90, ge=1, le=100, description="JPEG quality.")
    png_compression: int = Field(3, ge=0, le=9, description="PNG compression level.")
    padding: float = Field(
        0.25, ge=0, le=2, description="Margin added around the face on each side, as a fraction of its size."
    )
    size: int = Field(
        0, ge=0, le=4096,
        description="Side of the square output image in pixels (0: keep the crop's own resolution)."
    )
    max_payload_bytes: int = Field(
        DEFAULT_MAX_PAYLOAD_BYTES, ge=1024,
        description="Largest crop sent; bigger crops are scaled down until they fit (keep it within the "
        "brokers' message_size_limit).",
    )
    max_queued_bytes: int = Field(
        32 * 1024 * 1024, ge=1024,
        description="Bytes of crops waiting for the broker at most; beyond it new faces are dropped and "
        "counted (with mqtt.maxInFlight, this bounds memory while the broker is away).",
    )


class DetectorConfig(ComponentConfig):
    """Everything the `facecap detector` command needs."""

    live_keys = ("detection", "tracking", "output", "logging", "statsIntervalSeconds")
    # The worker pool and OpenCV's thread count are set up once, when the detector starts.
    restart_paths = ("detection.workers", "detection.threads")

    camera_id: str = Field("camera0", description="Camera id in topics, [A-Za-z0-9._-]{1,64} (one camera; "
                                                  "see `cameras`).")
    camera: CameraSettings = Field(default_factory=CameraSettings, description="The frame source (one camera).")
    cameras: list[CameraEntry] = Field(
        default_factory=list,
        description="Several cameras in one detector: each entry has its own `cameraId`, `source` and the keys "
        "of `camera`. Empty: the one camera `cameraId` + `camera` (the shorthand); when set, those two must keep "
        "their defaults.",
    )
    detection: DetectionSettings = Field(default_factory=DetectionSettings, description="Face detection.")
    tracking: TrackingSettings = Field(default_factory=TrackingSettings, description="What is sent when.")
    output: OutputSettings = Field(default_factory=OutputSettings, description="The crop.")
    mqtt: MqttSettings = Field(default_factory=MqttSettings, description="The local broker.")
    outbox: OutboxSettings = Field(default_factory=OutboxSettings,
                                   description="Faces kept on disk until the cloud's receipt (power-cut safe).")
    logging: LoggingSettings = Field(default_factory=LoggingSettings, description="Logging.")
    stats_interval_seconds: Seconds = Field(
        60, description="How often a stats line (fps, faces, tracks, published, dropped) is logged."
    )
    # The nucleus kills a component 5 s after SIGTERM: 4 s leaves time to say goodbye (status offline).
    shutdown_timeout_seconds: Seconds = Field(
        4,
        description="On SIGTERM, how long the whole stop may take: faces still being committed or in flight "
                    "to the broker, then the offline status. Keep it under 5: Greengrass kills a component 5 s "
                    "after SIGTERM.",
    )
    iot_core_stats: bool = Field(
        False, description="Also publish the periodic stats to AWS IoT Core (Greengrass IPC PublishToIoTCore, "
                           "topic facecap/<deviceId>/detector/stats); the core device's AWS IoT policy must allow "
                           "iot:Publish on it.",
    )

    @field_validator("camera_id")
    @classmethod
    def _check_camera_id(cls, value: str) -> str:
        return as_value_error(check_id, "camera-id", value)

    @field_validator("cameras")
    @classmethod
    def _check_unique_ids(cls, cameras: list[CameraEntry]) -> list[CameraEntry]:
        seen: set[str] = set()
        for entry in cameras:
            if entry.camera_id in seen:
                raise ValueError(f"cameraId {entry.camera_id!r} is given twice; each camera needs its own id")
            seen.add(entry.camera_id)
        return cameras

    @model_validator(mode="after")
    def _one_way_to_name_cameras(self) -> Self:
        # The single-camera keys count as given when they differ from their defaults: a Greengrass recipe
        # always passes its defaults, so mere presence cannot tell.
        if self.cameras and (self.camera_id != "camera0" or self.camera != CameraSettings()):
            raise ValueError("give either `cameras` or the single-camera keys `cameraId` and `camera`, not both "
                             "(reset `cameraId` and `camera` when moving to `cameras`)")
        return self

    def camera_list(self) -> list[CameraEntry]:
        """The cameras to watch: `cameras`, or the shorthand as a one-entry list."""
        if self.cameras:
            return list(self.cameras)
        return [CameraEntry(camera_id=self.camera_id, **self.camera.model_dump())]


def camera_key(config: DetectorConfig, index: int) -> str:
    """How the configuration names camera `index` in messages: `camera` or `cameras[i]`."""
    return f"cameras[{index}]" if config.cameras else "camera"

