"""The detector's configuration model: defaults, key names in errors, and model path resolution."""

from __future__ import annotations

import pytest

from facecap.config import component_model, default_configuration, describe, load_config
from facecap.detector.config import DetectorConfig, resolve_model_path
from facecap.errors import ConfigError

pytestmark = pytest.mark.unit


def test_registered_under_detector() -> None:
    assert component_model("detector") is DetectorConfig


def test_every_key_has_a_default_and_a_description() -> None:
    rows = describe(DetectorConfig)
    keys = {key for key, _, _ in rows}
    assert {"camera.source", "detection.modelPath", "tracking.resendIntervalSeconds", "output.jpegQuality",
            "mqtt.maxInFlight", "statsIntervalSeconds"} <= keys
    assert [key for key, _, description in rows if not description] == []
    defaults = default_configuration(DetectorConfig)
    assert defaults["tracking"]["mode"] == "best"
    assert defaults["detection"]["scoreThreshold"] == 0.7
    # The defaults validate as a configuration themselves (the recipe's DefaultConfiguration).
    assert load_config(DetectorConfig, "detector", defaults, env={}) == DetectorConfig()


def test_no_top_level_model_key_so_facecap_model_is_not_configuration() -> None:
    config = load_config(DetectorConfig, "detector", {}, env={"FACECAP_MODEL": "/opt/model.onnx"})
    assert config.detection.model_path == ""
    assert "model" not in default_configuration(DetectorConfig)


def test_environment_overrides_nested_keys() -> None:
    config = load_config(DetectorConfig, "detector", '{"camera": {"source": "/dev/video1"}}',
                         env={"FACECAP_TRACKING__MODE": "every", "FACECAP_CAMERA__MAX_FPS": "5"})
    assert (config.camera.source, config.camera.max_fps, config.tracking.mode) == ("/dev/video1", 5, "every")


def test_bad_values_are_named_by_key() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(DetectorConfig, "detector", {
            "cameraId": "front door", "topicPrefix": "faces/#", "camera": {"source": "", "fps": -1},
            "tracking": {"mode": "sometimes"}, "output": {"jpegQuality": 101}, "detection": {"modle": "x"},
        }, env={})
    keys = {key for key, _ in caught.value.problems}
    assert keys == {"cameraId", "topicPrefix", "camera.source", "camera.fps", "tracking.mode",
                    "output.jpegQuality", "detection.modle"}
    assert dict(caught.value.problems)["detection.modle"] == "unknown key"


def test_backoff_bounds_must_be_ordered() -> None:
    with pytest.raises(ConfigError, match="reconnectMaxSeconds"):
        load_config(DetectorConfig, "detector",
                    {"camera": {"reconnectMinSeconds": 5, "reconnectMaxSeconds": 1}}, env={})


def test_model_path_comes_from_config_then_option_then_environment() -> None:
    env = {"FACECAP_MODEL": "/env/m.onnx"}
    assert resolve_model_path("/cfg/m.onnx", "/cli/m.onnx", env) == ("/cfg/m.onnx", "detection.modelPath")
    assert resolve_model_path("", "/cli/m.onnx", env) == ("/cli/m.onnx", "--model")
    assert resolve_model_path("", None, env) == ("/env/m.onnx", "FACECAP_MODEL")
    assert resolve_model_path("", None, {}) == ("", "")


def test_detection_scale_follows_min_face_size_and_old_widths_keep_their_meaning() -> None:
    auto = load_config(DetectorConfig, "detector", {}, env={}).detection.scaling()
    # 40-px faces are shown to YuNet at 28 px whatever the frame size: 640 -> 448, 1920 -> 1344.
    assert [auto.detection_width(w) for w in (640, 1280, 1920)] == [448, 896, 1344]
    cheaper = load_config(DetectorConfig, "detector", {"detection": {"minFaceSize": 80}}, env={})
    assert cheaper.detection.scaling().detection_width(1920) == 672
    tiny = load_config(DetectorConfig, "detector", {"detection": {"minFaceSize": 20}}, env={})
    assert tiny.detection.scaling().detection_width(640) == 640  # never upscaled
    # Configurations written before `auto` existed (a number) validate and scale as they did.
    old = load_config(DetectorConfig, "detector", {"detection": {"width": 416}}, env={}).detection.scaling()
    assert [old.detection_width(w) for w in (320, 640, 1920)] == [320, 416, 416]
    full = load_config(DetectorConfig, "detector", {}, env={"FACECAP_DETECTION__WIDTH": "0"})
    assert full.detection.scaling().detection_width(1920) == 1920
    with pytest.raises(ConfigError) as error:
        load_config(DetectorConfig, "detector", {"detection": {"width": "wide"}}, env={})
    assert "detection.width" in str(error.value)
