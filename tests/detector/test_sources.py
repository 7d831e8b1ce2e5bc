"""How a camera source string is read and described (pure)."""

from __future__ import annotations

import pytest

from facecap.detector.camera import describe_source, source_kind
from facecap.detector.config import CameraSettings

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("source", "kind"),
    [("0", "v4l2"), ("/dev/video2", "v4l2"), ("rtsp://cam.local/stream", "url"), ("http://x/y.mjpg", "url"),
     ("v4l2src ! videoconvert ! appsink", "gstreamer"),
     ("rtspsrc location=rtsp://cam/1 latency=0 ! rtph264depay ! nvv4l2decoder ! appsink", "gstreamer"),
     ("/data/street.mp4", "file"), ("clip.avi", "file"),
     ("/dev/v4l/by-id/usb-046d_C920-video-index0", "v4l2"), ("/dev/v4l/by-path/platform-usb-0:1:1.0-video-index0",
                                                             "v4l2"), ("/dev/shm/clip.mp4", "file")],
)
def test_source_kind_from_its_form(source: str, kind: str) -> None:
    assert source_kind(CameraSettings(source=source)) == kind


def test_an_explicit_kind_wins() -> None:
    assert source_kind(CameraSettings(source="0", kind="file")) == "file"


def test_stream_credentials_are_never_described() -> None:
    text = describe_source(CameraSettings(source="rtsp://admin:secret@10.0.0.5/live"))
    assert "secret" not in text and "admin" not in text and "10.0.0.5/live" in text
    assert describe_source(CameraSettings(source="1")) == "v4l2 /dev/video1"


@pytest.mark.parametrize(("source", "kind"), [
    ("rtsp://admin:pa@ss@10.0.0.5/live", "url"),  # FFmpeg takes the user part up to the last "@"
    ("rtspsrc location=rtsp://admin:secret@10.0.0.5/live ! decodebin ! appsink", "gstreamer"),
    ("rtspsrc location=rtsp://10.0.0.5/live user-id=admin user-pw=secret ! decodebin ! appsink", "gstreamer"),
])
def test_credentials_in_any_kind_of_source_are_never_described(source: str, kind: str) -> None:
    text = describe_source(CameraSettings(source=source, kind=kind))
    assert "secret" not in text and "pa@ss" not in text and "ss@" not in text, text
    assert "10.0.0.5/live" in text and text.startswith(kind)
