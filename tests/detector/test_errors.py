"""A missing camera or model stops `facecap detector` with a message that names the problem; no model at
all falls back to Haar with one clear warning."""

from __future__ import annotations

from pathlib import Path

import pytest

from facecap.detector.camera import has_gstreamer
from facecap.devkit.servers import MosquittoServer
from facecap.validation import Problem, check
from tests.support.helpers import Collector, subscriber

from .conftest import DetectorRunner, detector_config

pytestmark = pytest.mark.integration


def test_missing_video_file(broker: MosquittoServer, tmp_path: Path, model_path: Path,
                            run_detector: DetectorRunner) -> None:
    detector = run_detector(detector_config(tmp_path / "gone.avi", broker, model_path))
    assert detector.wait(30) == 2
    assert "camera.source: video file" in detector.output() and "gone.avi does not exist" in detector.output()


def test_a_file_that_is_not_a_video_is_refused_at_start_as_validate_config_refuses_it(
        broker: MosquittoServer, tmp_path: Path, model_path: Path, run_detector: DetectorRunner) -> None:
    notes = tmp_path / "notes.mp4"
    notes.write_text("a text file with a video's name\n" * 100)
    detector = run_detector(detector_config(notes, broker, model_path))
    assert detector.wait(30) == 2
    assert f"facecap detector: camera.source: OpenCV cannot read {notes} as a video" in detector.output()
    assert check("detector", {"camera": {"source": str(notes)}}, strict=True) == [
        Problem("camera.source", f"OpenCV cannot read {notes} as a video", "error", about_file=True)]


def test_missing_camera_device_is_retried_then_reported(broker: MosquittoServer, street_video: Path,
                                                       model_path: Path, run_detector: DetectorRunner) -> None:
    device = "/dev/video57"
    assert not Path(device).exists()
    config = detector_config(street_video, broker, model_path,
                             camera={"source": device, "reconnectMinSeconds": 0.2, "giveUpAfterSeconds": 1.5})
    detector = run_detector(config)
    assert detector.wait(30) == 1
    output = detector.output()
    assert f"camera v4l2 {device} unavailable: {device} does not exist" in output
    assert "retrying with backoff" in output
    assert "camera.giveUpAfterSeconds=1.5" in output


def test_missing_model_file(broker: MosquittoServer, street_video: Path, tmp_path: Path,
                            run_detector: DetectorRunner) -> None:
    missing = tmp_path / "yunet.onnx"
    detector = run_detector(detector_config(street_video, broker, missing))
    assert detector.wait(30) == 2
    assert f"detection.modelPath: YuNet model file {missing} does not exist" in detector.output()
    # The same through the environment variable the Greengrass recipe sets: the message names it.
    detector = run_detector(detector_config(street_video, broker, None), env={"FACECAP_MODEL": str(missing)})
    assert detector.wait(30) == 2
    assert f"FACECAP_MODEL: YuNet model file {missing} does not exist" in detector.output()


def test_yunet_required_without_a_model(broker: MosquittoServer, street_video: Path,
                                        run_detector: DetectorRunner) -> None:
    detector = run_detector(detector_config(street_video, broker, None, detection={"detector": "yunet"}))
    assert detector.wait(30) == 2
    assert "detection.detector: yunet requested but no YuNet model given" in detector.output()


def test_no_model_falls_back_to_haar_with_one_warning(broker: MosquittoServer, street_video: Path,
                                                      run_detector: DetectorRunner) -> None:
    collector = Collector()
    listener = subscriber(broker, "faces/#", collector)
    try:
        detector = run_detector(detector_config(street_video, broker, None, detection={"width": 320}))
        assert collector.wait_for(1, timeout=60), detector.output()
        assert detector.terminate() == 0, detector.output()
    finally:
        listener.stop()
    assert detector.output().count("FALLING BACK TO THE HAAR CASCADE") == 1
    assert dict(collector.messages[0].user_properties)["detector"] == "haar"


@pytest.mark.skipif(has_gstreamer(), reason="this OpenCV has GStreamer, so a pipeline is accepted")
def test_gstreamer_pipeline_without_gstreamer(broker: MosquittoServer, model_path: Path,
                                              run_detector: DetectorRunner) -> None:
    config = detector_config(Path("x"), broker, model_path,
                             camera={"source": "nvarguscamerasrc ! nvvidconv ! video/x-raw,format=BGRx ! appsink"})
    detector = run_detector(config)
    assert detector.wait(30) == 2
    assert "built without GStreamer" in detector.output()


def test_bad_configuration_names_the_keys(broker: MosquittoServer, street_video: Path,
                                          run_detector: DetectorRunner) -> None:
    config = detector_config(street_video, broker, None, tracking={"mode": "all"}, camera={"maxFps": -1})
    detector = run_detector(config)
    assert detector.wait(30) == 2
    assert "tracking.mode" in detector.output() and "camera.maxFps" in detector.output()
