"""The detector's configuration model: defaults, key names in errors, and model path resolution."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from facecap.config import component_model, default_configuration, describe, load_config
from facecap.detector.config import DetectorConfig
from facecap.detector.model import ModelChoice, cache_dir, find_model
from facecap.errors import ConfigError
from facecap.release import MODEL_FILE

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


def test_model_path_comes_from_config_then_option_then_environment_then_shared_then_cache(tmp_path: Path) -> None:
    files = {name: tmp_path / name / "m.onnx" for name in ("cfg", "cli", "env", "cache/facecap")}
    for path in files.values():
        path.parent.mkdir(parents=True)
        path.write_bytes(b"onnx")
    shared = tmp_path / "shared" / "models" / MODEL_FILE
    shared.parent.mkdir(parents=True)
    shared.write_bytes(b"onnx")
    env = {"FACECAP_MODEL": str(files["env"]), "FACECAP_SHARED": str(tmp_path / "shared"),
           "XDG_CACHE_HOME": str(tmp_path / "cache")}
    cfg, cli = str(files["cfg"]), str(files["cli"])
    assert find_model(cfg, cli, env) == ModelChoice(cfg, "detection.modelPath")
    assert find_model("", cli, env) == ModelChoice(cli, "--model")
    assert find_model("", None, env) == ModelChoice(str(files["env"]), "FACECAP_MODEL")
    del env["FACECAP_MODEL"]
    assert find_model("", None, env) == ModelChoice(str(shared), "FACECAP_SHARED")
    del env["FACECAP_SHARED"]
    assert find_model("", None, env).path == ""  # no copy named MODEL_FILE in the cache yet
    cached = cache_dir(env) / MODEL_FILE
    cached.write_bytes(b"onnx")
    assert find_model("", None, env) == ModelChoice(str(cached), "the cache")
    with pytest.raises(ConfigError, match=r"--model: YuNet model file .*nope.onnx does not exist"):
        find_model("", str(tmp_path / "nope.onnx"), env)


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


def test_the_single_camera_keys_are_a_one_entry_camera_list() -> None:
    shorthand = load_config(DetectorConfig, "detector",
                            {"cameraId": "door", "camera": {"source": "rtsp://cam/1", "maxFps": 10}}, env={})
    listed = load_config(DetectorConfig, "detector",
                         {"cameras": [{"cameraId": "door", "source": "rtsp://cam/1", "maxFps": 10}]}, env={})
    assert shorthand.camera_list() == listed.camera_list()
    assert [entry.camera_id for entry in listed.camera_list()] == ["door"]
    assert DetectorConfig().camera_list()[0].camera_id == "camera0"


def test_cameras_through_the_environment_with_the_recipe_defaults() -> None:
    # A Greengrass recipe always passes the defaults of cameraId and camera: with them, cameras is valid.
    defaults = default_configuration(DetectorConfig)
    env = {"FACECAP_CAMERAS": '[{"cameraId": "a", "source": "0"}, {"cameraId": "b", "source": "1", "maxFps": 5}]',
           "FACECAP_CAMERA_ID": defaults["cameraId"], "FACECAP_CAMERA": json.dumps(defaults["camera"])}
    config = load_config(DetectorConfig, "detector", defaults, env=env)
    assert [(c.camera_id, c.source, c.max_fps) for c in config.camera_list()] == [("a", "0", 15), ("b", "1", 5)]


def test_a_duplicate_camera_id_is_rejected_by_name() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(DetectorConfig, "detector", {"cameras": [
            {"cameraId": "door", "source": "0"}, {"cameraId": "yard", "source": "1"},
            {"cameraId": "door", "source": "2"}]}, env={})
    problems = dict(caught.value.problems)
    assert list(problems) == ["cameras"] and "'door' is given twice" in problems["cameras"]


@pytest.mark.parametrize("single", [{"cameraId": "door"}, {"camera": {"source": "1"}}])
def test_cameras_and_the_single_camera_keys_together_are_refused(single: dict[str, object]) -> None:
    with pytest.raises(ConfigError, match="either `cameras` or the single-camera keys"):
        load_config(DetectorConfig, "detector", {"cameras": [{"cameraId": "a", "source": "0"}], **single}, env={})


def test_each_camera_entry_needs_an_id_and_a_source_and_valid_settings() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(DetectorConfig, "detector", {"cameras": [
            {"source": "0"}, {"cameraId": "front door", "source": "1"}, {"cameraId": "c", "maxFps": -1}]}, env={})
    keys = {key for key, _ in caught.value.problems}
    assert keys == {"cameras.0.cameraId", "cameras.1.cameraId", "cameras.2.source", "cameras.2.maxFps"}
