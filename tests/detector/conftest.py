"""Fixtures for the detector tests: the street-scene video and a way to run `facecap detector`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from facecap.config import deep_merge

from .scenes import Scene, street_scene

DetectorRunner = Callable[..., "DetectorProcess"]


@pytest.fixture(scope="session")
def street(shared_dir: Path) -> Scene:
    return street_scene(shared_dir)


@pytest.fixture(scope="session")
def street_video(street: Scene, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return street.write(tmp_path_factory.mktemp("video") / "street.avi")


def detector_config(video: Path, broker: Any, model: Path | None, **sections: Any) -> dict[str, Any]:
    """A configuration for the street video on a test broker, with `sections` merged over it."""
    config: dict[str, Any] = {
        "deviceId": "jetson-test",
        "cameraId": "street",
        "camera": {"source": str(video), "maxFps": 0},
        "detection": {"modelPath": str(model) if model else ""},
        "mqtt": {"host": broker.host, "port": broker.port, "minReconnectDelaySeconds": 0.2,
                 "maxReconnectDelaySeconds": 1},
        "statsIntervalSeconds": 1,
    }
    return deep_merge(config, sections)


class DetectorProcess:
    """`facecap detector` as a child process, its output collected in a file."""

    def __init__(self, config: dict[str, Any], folder: Path, env: dict[str, str] | None = None,
                 args: tuple[str, ...] = ()) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.log_path = folder / "detector.log"
        environment = {k: v for k, v in os.environ.items() if not k.startswith("FACECAP_")}
        # No model from a developer's cache either: a test without one must see the Haar fallback.
        environment["XDG_CACHE_HOME"] = str(folder / "cache")
        environment.update(env or {})
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in wait()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "facecap.cli", "detector", "--config", json.dumps(config), *args],
            stdout=self._log, stderr=subprocess.STDOUT, env=environment,
            cwd=folder,  # the outbox's default place (./outbox when FACECAP_WORK_DIR is not set)
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def wait(self, timeout: float = 60) -> int:
        try:
            return self.process.wait(timeout)
        finally:
            self._log.close()

    def terminate(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.wait(30)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self._log.close()

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stats(self) -> list[dict[str, str]]:
        """Every `stats:` line as a dict of its key=value pairs."""
        lines = [line.split("stats: ", 1)[1] for line in self.output().splitlines() if "stats: " in line]
        return [dict(pair.split("=", 1) for pair in line.split()) for line in lines]


@pytest.fixture
def run_detector(tmp_path: Path) -> Iterator[DetectorRunner]:
    started: list[DetectorProcess] = []

    def start(config: dict[str, Any], env: dict[str, str] | None = None, args: tuple[str, ...] = ()) -> DetectorProcess:
        process = DetectorProcess(config, tmp_path / f"detector-{len(started)}", env, args)
        started.append(process)
        return process

    yield start
    for process in started:
        process.kill()
