"""Configuration loading: sources, environment overlay, Greengrass leftovers, and error messages."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from pydantic import Field

from facecap.config import (
    ConfigModel,
    LoggingSettings,
    config_source,
    default_configuration,
    describe,
    load_config,
    resolve_device_id,
    with_flags,
)
from facecap.errors import ConfigError
from facecap.logger.config import LoggerConfig
from facecap.mqtt import MqttSettings
from facecap.processor.config import ProcessorConfig
from facecap.validation import file_problem

from .conftest import unavailable
from .support.users import NOBODY, as_nobody, folder_for_two_users

pytestmark = pytest.mark.unit


class Camera(ConfigModel):
    source: str = Field("0", description="camera source")
    fps_limit: float = Field(15.0, gt=0, description="frames per second at most")


class SampleConfig(ConfigModel):
    device_id: str = Field("", description="device id")
    resend_interval_seconds: float = Field(10.0, ge=0, description="re-send interval")
    camera: Camera = Field(default_factory=Camera, description="camera")
    mqtt: MqttSettings = Field(default_factory=MqttSettings, description="broker")
    logging: LoggingSettings = Field(default_factory=LoggingSettings, description="logs")


def problems(exc: pytest.ExceptionInfo[ConfigError]) -> dict[str, str]:
    return dict(exc.value.problems)


def test_defaults_and_camel_case_keys() -> None:
    config = load_config(SampleConfig, "sample", None, env={})
    assert config.camera.fps_limit == 15.0
    defaults = default_configuration(SampleConfig)
    assert defaults["resendIntervalSeconds"] == 10.0
    assert defaults["camera"] == {"source": "0", "fpsLimit": 15.0}
    assert defaults["mqtt"]["maxInFlight"] == 256


def test_json_string_file_and_env_layering(tmp_path: Path) -> None:
    file = tmp_path / "c.json"
    file.write_text(json.dumps({"camera": {"source": "video.mp4"}, "deviceId": "from-file"}))
    env = {"FACECAP_DEVICE_ID": "from-env", "FACECAP_CAMERA__FPS_LIMIT": "5",
           "FACECAP_MQTT": '{"host": "broker.local", "port": 8883, "tls": true}', "OTHER": "x"}
    config = load_config(SampleConfig, "sample", str(file), env=env)
    assert config.device_id == "from-env"  # environment wins over the file
    assert config.camera.source == "video.mp4"  # the file's nested value survives a nested env overlay
    assert config.camera.fps_limit == 5.0
    assert (config.mqtt.host, config.mqtt.port, config.mqtt.tls) == ("broker.local", 8883, True)
    inline = load_config(SampleConfig, "sample", '{"resendIntervalSeconds": 3}', env={})
    assert inline.resend_interval_seconds == 3


def test_a_flag_wins_over_the_environment_and_an_empty_variable_is_no_value() -> None:
    # In the processor's container FACECAP_* may set a key that an operator's flag then overrides.
    flagged = with_flags(ProcessorConfig, "processor", {"--unhealthy-after": ("unhealthyAfterSeconds", 7.0)},
                         env={"FACECAP_UNHEALTHY_AFTER_SECONDS": "300"})
    assert flagged.unhealthy_after_seconds == 7.0
    # `FACECAP_MQTT=` (set but empty, as compose writes an unset .env value) changes nothing.
    config = load_config(SampleConfig, "sample", "{}", env={"FACECAP_MQTT": "", "FACECAP_DEVICE_ID": ""})
    assert config.mqtt == MqttSettings() and config.device_id == SampleConfig().device_id


def test_every_bad_key_is_named() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(SampleConfig, "sample",
                    '{"camera": {"fpsLimit": 0, "colour": "red"}, "resendInterval": 5, "mqtt": {"port": "x"}}',
                    env={})
    found = problems(info)
    assert found["camera.fpsLimit"].startswith("Input should be greater than 0")
    assert found["camera.colour"] == "unknown key"
    assert found["resendInterval"] == "unknown key"
    assert "mqtt.port" in found
    assert "invalid sample configuration" in str(info.value)


def test_unreplaced_greengrass_variable_names_the_missing_key() -> None:
    env = {"FACECAP_CAMERA": "{configuration:/camera}", "FACECAP_DEVICE_ID": "{configuration:/deviceId}"}
    with pytest.raises(ConfigError) as info:
        load_config(SampleConfig, "sample", None, env=env)
    found = problems(info)
    assert "no value at /camera" in found["camera"]
    assert "no value at /deviceId" in found["deviceId"]


def test_invalid_json_in_env_and_source(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(SampleConfig, "sample", None, env={"FACECAP_CAMERA": "{source: 1"})
    assert "FACECAP_CAMERA is not valid JSON" in problems(info)["camera"]
    bad = tmp_path / "bad.json"
    bad.write_text("{\n  'single quotes': 1\n}")
    with pytest.raises(ConfigError, match="invalid JSON at line 2"):
        load_config(SampleConfig, "sample", str(bad), env={})
    with pytest.raises(ConfigError, match=r"file /no/such/file\.json does not exist"):
        load_config(SampleConfig, "sample", "/no/such/file.json", env={})
    a_list = tmp_path / "list.json"
    a_list.write_text("[1]")
    with pytest.raises(ConfigError, match="must be a JSON object"):
        load_config(SampleConfig, "sample", str(a_list), env={})


def test_mqtt_settings_rules(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(SampleConfig, "sample", '{"mqtt": {"certFile": "/x.crt"}}', env={})
    assert "certFile and keyFile go together" in problems(info)["mqtt"]
    secret = tmp_path / "pw"
    secret.write_text("hunter2\nignored\n")
    settings = MqttSettings(password_file=str(secret), username="u")
    assert settings.read_password() == "hunter2"
    # Never the password itself: in the configuration it is refused, and no variable carries it.
    with pytest.raises(ConfigError) as info:
        load_config(SampleConfig, "sample", '{"mqtt": {"password": "hunter3"}}', env={})
    assert "set passwordFile" in problems(info)["mqtt"] and "hunter3" not in str(info.value)
    ignored = load_config(SampleConfig, "sample", None, env={"FACECAP_MQTT__PASSWORD": "hunter3"}).mqtt
    assert ignored.read_password() == ""


def test_describe_lists_every_leaf_with_default_and_description() -> None:
    rows = {key: (default, text) for key, default, text in describe(SampleConfig)}
    assert rows["camera.fpsLimit"] == ("15.0", "frames per second at most")
    assert rows["mqtt.passwordFile"][0] == '""'
    assert "mqtt.password" not in rows  # secrets only as files
    assert rows["logging.level"][0] == '"INFO"'


def test_device_id_resolution(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_IOT_THING_NAME", "thing-7")
    assert resolve_device_id("") == "thing-7"
    assert resolve_device_id("explicit") == "explicit"
    with pytest.raises(ConfigError, match="deviceId"):
        resolve_device_id("bad/id")
    # A name the processor keeps for itself: every face of it would be quarantined in the cloud.
    monkeypatch.setenv("AWS_IOT_THING_NAME", "facecap-jetson-01")
    with pytest.raises(ConfigError, match="deviceId: device id 'facecap-jetson-01' is reserved"):
        resolve_device_id("")
    with pytest.raises(ConfigError, match="deviceId: device id 'Quarantine' is reserved"):
        load_config(LoggerConfig, "logger", {"deviceId": "Quarantine"}, env={})


def test_config_source_is_the_option_else_facecap_config() -> None:
    assert config_source('{"a": 1}', env={"FACECAP_CONFIG": "/etc/x.json"}) == '{"a": 1}'
    assert config_source(None, env={"FACECAP_CONFIG": "/etc/x.json"}) == "/etc/x.json"
    assert config_source("", env={"FACECAP_CONFIG": ""}) is None
    assert config_source(None, env={}) is None


@pytest.mark.unit
def test_leftover_keys_are_dropped_and_named_when_asked_wherever_they_come_from() -> None:
    from facecap.detector.config import DetectorConfig

    # Under Greengrass a restart key reaches the component twice: over IPC and in its Setenv variable.
    data = {"cameras": [{"cameraId": "door", "source": "0", "zoom": 2}], "retiredKey": 1}
    env = {"FACECAP_MQTT": json.dumps({"host": "10.0.0.2", "newKey": 5})}
    with pytest.raises(ConfigError) as refused:
        load_config(DetectorConfig, "detector", data, env=env)
    assert {key for key, _ in refused.value.problems} == {"cameras.0.zoom", "retiredKey", "mqtt.newKey"}
    named: list[str] = []
    config = load_config(DetectorConfig, "detector", data, env=env, leftovers=named.extend)
    assert sorted(named) == ["cameras[0].zoom", "mqtt.newKey", "retiredKey"]
    assert config.mqtt.host == "10.0.0.2" and config.cameras[0].camera_id == "door"


def test_a_file_the_component_user_cannot_read_is_named_with_its_uid() -> None:
    """Under Greengrass the component runs as ggc_user: a root-only password file exists but cannot be read."""
    if os.geteuid() != 0:
        unavailable("needs root, to play the component's user", "CI must run as root")
    with folder_for_two_users("facecap-unreadable-") as folder:
        secret = folder / "password"
        secret.write_text("not for everyone\n")
        secret.chmod(0o600)
        problem = as_nobody(lambda: file_problem(str(secret), "password file") or "readable")
    assert problem == f"password file {secret} is not readable by uid {NOBODY} (the component's user)"
