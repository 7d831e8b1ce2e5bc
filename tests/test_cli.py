"""The facecap command: help everywhere, `send` to a real broker, `validate-config`."""

from __future__ import annotations

import argparse
import fcntl
import importlib
import inspect
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

from facecap.cli import COMMAND_MODULES, build_parser, main
from facecap.commands import demo as demo_command
from facecap.config import COMPONENT_MODELS
from facecap.contract import parse_message
from facecap.devkit import servers
from facecap.devkit.servers import MosquittoServer

from .support.helpers import Collector, subscriber

PNG_1x1 = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
)


@pytest.mark.unit
def test_every_subcommand_has_help() -> None:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    subcommands: dict[str, argparse.ArgumentParser] = action.choices
    assert {"send", "validate-config"} <= set(subcommands)
    assert len(COMMAND_MODULES) >= 2
    for name in subcommands:
        result = subprocess.run([sys.executable, "-m", "facecap.cli", name, "--help"],
                                capture_output=True, text=True, timeout=60, check=False)
        assert result.returncode == 0, result.stderr
        assert "usage: facecap" in result.stdout


@pytest.mark.unit
def test_every_command_and_action_describes_itself_from_its_run_docstring() -> None:
    """`facecap NAME --help` explains more than the one line of `facecap --help`: add_command takes the text
    from the docstring of the function the command runs, so a command without one shows up here."""
    def commands(parser: argparse.ArgumentParser, path: str) -> list[tuple[str, argparse.ArgumentParser]]:
        found = []
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    found += [(f"{path} {name}".strip(), sub), *commands(sub, f"{path} {name}")]
        return found

    listed = commands(build_parser(), "")
    names = {name for name, _ in listed}
    assert {"broker", "logger", "detector", "processor", "processor healthcheck", "outbox status"} <= names
    for name, sub in listed:
        run = sub.get_default("func")
        if run is None:  # a group of actions (`outbox`) runs nothing itself
            assert name == "outbox", name
            continue
        assert run.__doc__, f"facecap {name}: {run.__qualname__} has no docstring for its --help"
        assert sub.description == inspect.cleandoc(run.__doc__), name
        assert len(sub.description.split()) > 12, f"facecap {name}: --help says too little: {sub.description!r}"


@pytest.mark.unit
def test_building_the_parser_loads_no_component_runtime() -> None:
    """Every process of a component builds the whole parser: the EdgeBroker must not carry the MQTT
    client (awscrt, ~9 MB), nor any process OpenCV or boto3 it does not use."""
    probe = ("import sys, facecap.cli; facecap.cli.build_parser(); "
             "print(' '.join(sorted(m for m in ('cv2', 'numpy', 'boto3', 'awscrt', 'facecap.mqtt.client', "
             "'facecap.outbox.publisher') if m in sys.modules)))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.split() == []


@pytest.mark.unit
def test_demo_without_the_devkit_says_so_in_one_line(monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """As on a device, whose wheel leaves facecap.commands.demo and facecap.devkit out."""
    real_import = importlib.import_module

    def import_without(missing: str) -> Callable[..., ModuleType]:
        def import_module(name: str, package: str | None = None) -> ModuleType:
            if name == "facecap.commands.demo":
                raise ModuleNotFoundError(f"No module named {missing!r}", name=missing)
            return real_import(name, package)
        return import_module

    monkeypatch.setattr(importlib, "import_module", import_without("facecap.commands.demo"))
    assert main(["demo", "--out", "somewhere"]) == 2
    assert capsys.readouterr().err == ("facecap: the demo is part of the development kit, which this installation "
                                       "(the device wheel) leaves out; run it from a checkout of facecap "
                                       "(make setup, or pip install -e \".[detector,processor,demo]\")\n")
    # Anything else missing is a broken installation, and says so with its traceback.
    monkeypatch.setattr(importlib, "import_module", import_without("cv2"))
    with pytest.raises(ModuleNotFoundError):
        build_parser()


@pytest.mark.integration
def test_the_demo_without_its_tools_or_extras_says_what_to_install_in_one_line(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path, model_path: Path) -> None:
    """A laptop without Mosquitto (or SeaweedFS, or an extra such as OpenCV) got a traceback."""
    monkeypatch.setattr(servers, "find_binary", lambda name: None)
    assert main(["demo", "--out", str(tmp_path / "a"), "--model", str(model_path), "--source", "0"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("facecap demo: mosquitto is not installed (apt-get install mosquitto)"), err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err

    def no_opencv(*_args: object, **_kwargs: object) -> int:
        raise ModuleNotFoundError("No module named 'cv2'", name="cv2")

    monkeypatch.setattr(demo_command, "sample_videos", no_opencv)
    assert main(["demo", "--out", str(tmp_path / "b"), "--model", str(model_path)]) == 2
    err = capsys.readouterr().err
    assert "the demo needs the Python module cv2" in err and ".[detector,processor,demo]" in err, err


def test_two_demos_in_one_folder_the_second_says_so(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """The second would write a new CA and passwords under the first one's running parts."""
    with open(tmp_path / ".demo.lock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert main(["demo", "--out", str(tmp_path), "--source", "0"]) == 2
    assert "another facecap demo is running in this folder" in capsys.readouterr().err


def test_send_publishes_images_as_contract_messages(broker: MosquittoServer, tmp_path: Path) -> None:
    image = tmp_path / "one.png"
    image.write_bytes(PNG_1x1)
    received = Collector()
    sub = subscriber(broker, "faces/#", received)
    code = main(["send", str(image), str(image), "--host", broker.host, "--port", str(broker.port),
                 "--device-id", "laptop-1", "--camera-id", "cam9"])
    assert code == 0
    assert received.wait_for(2)
    parsed = [parse_message(m.topic, m.payload, m.content_type, m.user_properties) for m in received.messages]
    assert {p.device_id for p in parsed} == {"laptop-1"}
    assert parsed[0].bbox == (0, 0, 1, 1) and parsed[0].content_type == "image/png"
    assert parsed[0].face_id != parsed[1].face_id
    legacy = main(["send", str(image), "--legacy", "--host", broker.host, "--port", str(broker.port),
                   "--device-id", "old-pi"])
    assert legacy == 0
    assert received.wait_for(3)
    bare = received.messages[2]
    assert bare.user_properties == () and bare.payload == PNG_1x1
    assert parse_message(bare.topic, bare.payload).legacy
    sub.stop()


@pytest.mark.unit
def test_send_rejects_non_images_before_connecting(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    code = main(["send", str(text), str(tmp_path / "missing.jpg"), "--host", "127.0.0.1", "--port", "1"])
    assert code == 2
    err = capsys.readouterr().err
    assert "notes.txt: not a readable JPEG or PNG" in err
    assert "missing.jpg: No such file or directory" in err


@pytest.mark.unit
def test_validate_config_ok_and_errors(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(COMPONENT_MODELS, "sample", "tests.test_config:SampleConfig")
    assert main(["validate-config", "sample", '{"camera": {"source": "rtsp://cam/1"}}']) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["camera"] == {"source": "rtsp://cam/1", "fpsLimit": 15.0}
    assert main(["validate-config", "sample", '{"camera": {"fpsLimit": -1}, "typo": 1}']) == 2
    err = capsys.readouterr().err
    assert "camera.fpsLimit: Input should be greater than 0" in err
    assert "typo: unknown key" in err
    assert main(["validate-config", "nonexistent", "{}"]) == 2
    assert "unknown component 'nonexistent'" in capsys.readouterr().err


@pytest.mark.unit
def test_validate_config_prints_no_secret(capsys: pytest.CaptureFixture[str]) -> None:
    cameras = [{"cameraId": "door", "source": "rtsp://admin:pa@ss@10.0.0.5/live"},
               {"cameraId": "yard", "source": "rtspsrc location=rtsp://10.0.0.6/live user-pw=pa@ss ! appsink",
                "kind": "gstreamer"}]
    assert main(["validate-config", "detector", json.dumps({"cameras": cameras})]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert [c["source"] for c in shown["cameras"]] == [
        "rtsp://***@10.0.0.5/live", "rtspsrc location=rtsp://10.0.0.6/live user-pw=*** ! appsink"]
    group = "k9Q2mZt7LwX4pR8vN3sB"
    assert main(["validate-config", "processor", json.dumps({"shareGroup": group})]) == 0
    out = capsys.readouterr().out
    assert group not in out and json.loads(out)["shareGroup"] == "***"


@pytest.mark.unit
def test_a_password_in_the_configuration_is_refused(monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(COMPONENT_MODELS, "sample", "tests.test_config:SampleConfig")
    assert main(["validate-config", "sample", '{"mqtt": {"password": "hunter2"}}']) == 2
    err = capsys.readouterr().err
    assert "hunter2" not in err
    assert "mqtt: " in err and "set passwordFile" in err
