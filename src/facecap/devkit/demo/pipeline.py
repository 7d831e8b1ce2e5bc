"""The whole pipeline on one machine: a cloud broker with TLS and device identities, the EdgeBroker with
its bridge, the FaceLogger, the processor into a local store (or the local S3 server), and the FaceDetector.

Each edge component runs as a real process, started by a launcher: by default `facecap <command>
--config <json>`; the end-to-end tests use a launcher that runs the built Greengrass recipes instead, so
both paths share everything else here. The demo, the end-to-end tests and the pipeline benchmark use it.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ...edgelocal import EDGE_DIR_ENV, SOCKET_NAME, socket_listening
from ...mqtt import MqttSettings
from ...polling import wait_until
from ..link import TcpProxy
from ..servers import CertificateAuthority, MosquittoServer, S3Server, ServerError, free_port, tail

DEVICE_ID = "demo-jetson"
PROCESSOR_USER = "processor"
BUCKET = "facecap-demo"

# The cloud broker's topic rules, as cloud/mosquitto/acl and processor.acl ship them (tests/test_demo.py
# checks they agree): a device publishes only under its own topics and reads only its own receipts; the
# processor reads every face and is the only writer of receipts (contract v1.1). (The demo's single
# listener keeps passwords; the shipped broker takes a device's identity from its certificate instead,
# see cloud/README.md.)
CLOUD_ACL = """\
pattern write faces/%u/#
pattern write facecap/%u/+/+/#
pattern write facecap/%u/status
pattern write facecap/%u/stats
pattern read facecap/%u/receipts
pattern write $SYS/broker/connection/facecap-edge-%u/state
user processor
topic read faces/#
topic read $share/+/faces/#
topic write facecap/+/processor/status
topic write facecap/+/receipts
topic write facecap/+/+/status
topic write facecap/+/+/stats
topic write $SYS/broker/connection/+/state
topic read facecap/+/+/status
topic read facecap/+/+/stats
topic read $SYS/broker/#
"""


@dataclass(frozen=True)
class Launched:
    """A started component: its process (in a session of its own, so that it can be stopped with its
    children), the file its output goes to, and where in that file this run's output begins (a restart,
    or a Greengrass log that keeps every run, appends to the same file)."""

    process: subprocess.Popen[bytes]
    log: Path
    log_start: int


class Launcher(Protocol):
    """Starts one component with its configuration."""

    def __call__(self, component: str, config: Mapping[str, Any], workdir: Path, log: Path,
                 env: Mapping[str, str]) -> Launched: ...


COMMANDS = {"broker": "broker", "logger": "logger", "detector": "detector", "processor": "processor"}


def command_launcher(component: str, config: Mapping[str, Any], workdir: Path, log: Path,
                     env: Mapping[str, str]) -> Launched:
    """Run `facecap <command> --config <json>` in `workdir`, as a Greengrass Run step would."""
    workdir.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "facecap.cli", COMMANDS[component], "--config", json.dumps(config)]
    with open(log, "ab") as out:
        start = out.tell()
        process = subprocess.Popen(argv, cwd=workdir, stdout=out, stderr=subprocess.STDOUT,
                                   env={**os.environ, **env}, start_new_session=True)
    return Launched(process, log, start)


@dataclass
class Component:
    """A running component process and where its log goes."""

    name: str
    config: dict[str, Any]
    workdir: Path
    log: Path
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    log_start: int = 0

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_text(self) -> str:
        """This run's output only, so that a line an earlier run wrote is never taken for this one's."""
        if not self.log.exists():
            return ""
        with self.log.open("rb") as log:
            log.seek(self.log_start)
            return log.read().decode(errors="replace")

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM to the component and its children (a recipe's shell, a broker's mosquitto), as the
        nucleus stops a component; SIGKILL if it is still there after `timeout`."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self._signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                self.process.wait(10)
        return self.process.returncode

    def kill(self) -> None:
        """SIGKILL, as a crash or a power cut ends a process: nothing is flushed."""
        if self.running and self.process is not None:
            self._signal(signal.SIGKILL)
            self.process.wait()

    def _signal(self, sig: signal.Signals) -> None:
        assert self.process is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, sig)


@dataclass
class PipelineSettings:
    workdir: Path
    store: str = "file"  # "file" or "s3"
    device_id: str = DEVICE_ID
    model: Path | None = None
    detector_overrides: dict[str, Any] = field(default_factory=dict)
    launcher: Launcher = command_launcher
    log_level: str = "INFO"
    # Route the bridge through a TcpProxy that tests can cut, as a lost uplink would.
    cuttable_link: bool = False
    processor_overrides: dict[str, Any] = field(default_factory=dict)
    # How the detector and the logger reach the edge broker: its Unix socket (as on a device) or TCP.
    local: str = "socket"
    # The EdgeBroker's run folder when the launcher decides it (a nucleus: <root>/work/<EdgeBroker>/local);
    # None: the pipeline picks one and tells the components through FACECAP_EDGE_BROKER_DIR.
    edge_dir: Path | None = None


class LocalPipeline:
    """Starts and stops the parts; every part can also be stopped, killed and restarted on its own."""

    def __init__(self, settings: PipelineSettings) -> None:
        self.settings = settings
        self.workdir = settings.workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.logs = self.workdir / "logs"
        self.logs.mkdir(exist_ok=True)
        self.secrets = self.workdir / "secrets"
        self.secrets.mkdir(mode=0o700, exist_ok=True)
        self.ca: CertificateAuthority | None = None
        self.cloud: MosquittoServer | None = None
        self.s3: S3Server | None = None
        self.link: TcpProxy | None = None
        self.edge_port = free_port()
        preferred = self.workdir / "work" / "broker" / "local"
        self.edge_dir = settings.edge_dir or _short_run_dir(preferred)
        # A folder of its own under /tmp when the work folder's path is too long for a socket: removed at the
        # end (it holds the broker's password files).
        self._temporary_run_dir = None if self.edge_dir in (preferred, settings.edge_dir) else self.edge_dir.parent
        self.components: dict[str, Component] = {}
        self.store_url = f"file://{(self.workdir / 'store').resolve()}"
        # The detector's outbox, kept across runs: a run resumes what an interrupted one left.
        self.detector_outbox = self.workdir / "detector-outbox"
        self._passwords: dict[str, str] = {}

    # --- cloud side -----------------------------------------------------------------------------------

    def start_cloud(self) -> None:
        self.ca = CertificateAuthority(self.secrets / "ca", name="facecap-demo-ca")
        self._passwords = {self.settings.device_id: secrets.token_urlsafe(18),
                           PROCESSOR_USER: secrets.token_urlsafe(18)}
        for user, password in self._passwords.items():
            path = self.secrets / f"{user}.password"
            path.write_text(password + "\n")
            path.chmod(0o600)
        self.cloud = MosquittoServer(self.workdir / "cloud-broker", ca=self.ca, users=self._passwords,
                                     acl=CLOUD_ACL, extra="message_size_limit 1100000\n").start()
        if self.settings.cuttable_link:
            self.link = TcpProxy(self.cloud.port)
        if self.settings.store == "s3":
            self.s3 = S3Server(self.workdir / "s3").start()
            client: Any = self.s3.client()
            client.create_bucket(Bucket=BUCKET)
            self.store_url = f"s3://{BUCKET}/faces"

    def cloud_mqtt(self, user: str) -> dict[str, Any]:
        assert self.cloud is not None and self.ca is not None
        return {"host": self.cloud.host, "port": self.cloud.port, "tls": True, "caFile": str(self.ca.cert),
                "username": user, "passwordFile": str(self.secrets / f"{user}.password")}

    def processor_config(self) -> dict[str, Any]:
        config: dict[str, Any] = {
            "mqtt": {**self.cloud_mqtt(PROCESSOR_USER), "clientId": "facecap-processor-demo",
                     "minReconnectDelaySeconds": 0.2, "maxReconnectDelaySeconds": 2},
            "store": self.store_url,
            "heartbeatFile": str(self.workdir / "processor.heartbeat"),
            "statsIntervalSeconds": 5,
            "retry": {"initialDelaySeconds": 0.2, "maxDelaySeconds": 2},
            "logging": {"level": self.settings.log_level},
        }
        return _merge(config, self.settings.processor_overrides)

    def start_processor(self, wait: bool = True) -> Component:
        """Start the processor; with wait, return once its subscription exists, since the cloud broker
        keeps faces only for a session that exists."""
        env = self.s3.env() if self.s3 else {}
        component = self._start("processor", self.processor_config(), env)
        if wait and not wait_until(lambda: "subscribed to" in component.log_text() or not component.running, 30):
            raise ServerError(f"processor did not subscribe:\n{tail(component.log)}")
        if not component.running:
            raise ServerError(f"processor exited:\n{tail(component.log)}")
        return component

    # --- edge side ------------------------------------------------------------------------------------

    def broker_config(self) -> dict[str, Any]:
        assert self.cloud is not None and self.ca is not None
        return {
            "deviceId": self.settings.device_id,
            "local": {"port": self.edge_port, "tcp": self.settings.local == "tcp",
                      **({} if self.settings.edge_dir else {"runDir": str(self.edge_dir)})},
            "bridge": {"host": self.cloud.host, "port": self.link.port if self.link else self.cloud.port, "tls": True,
                       "caFile": str(self.ca.cert), "username": self.settings.device_id,
                       "passwordFile": str(self.secrets / f"{self.settings.device_id}.password"),
                       "restartBaseSeconds": 1, "restartCapSeconds": 4},
            "persistence": {"dir": str(self.workdir / "edge-broker")},
            "logging": {"level": self.settings.log_level},
        }

    def edge_mqtt(self, identity: str) -> dict[str, Any]:
        """A component's mqtt section: nothing to say for the socket (`socketPath: auto` finds it and the
        identity, as on a device); host, port and the identity's password file for TCP."""
        section: dict[str, Any] = {"minReconnectDelaySeconds": 0.2, "maxReconnectDelaySeconds": 2}
        if self.settings.local == "tcp":
            section.update(socketPath="", host="127.0.0.1", port=self.edge_port, username=identity,
                           passwordFile=str(self.edge_dir / f"{identity}.password"))
        return section

    def edge_settings(self, identity: str = "monitor", **options: Any) -> MqttSettings:
        """For a client in this process (a tap, a benchmark's publisher): one of the broker's identities."""
        where: dict[str, Any] = ({"host": "127.0.0.1", "port": self.edge_port} if self.settings.local == "tcp"
                                 else {"socket_path": str(self.edge_dir / SOCKET_NAME)})
        return MqttSettings(**where, username=identity,
                            password_file=str(self.edge_dir / f"{identity}.password"), **options)

    def logger_config(self) -> dict[str, Any]:
        return {"deviceId": self.settings.device_id, "mqtt": self.edge_mqtt("logger"), "summaryIntervalSeconds": 10,
                "logging": {"level": self.settings.log_level}}

    def detector_config(self, source: str | Sequence[str]) -> dict[str, Any]:
        """One source: the single-camera keys, camera `cam0`; several: `cameras`, `cam0`, `cam1`, ..."""
        sources = [source] if isinstance(source, str) else list(source)
        cameras: dict[str, Any] = {"cameraId": "cam0", "camera": {"source": sources[0]}}
        if len(sources) > 1:
            cameras = {"cameras": [{"cameraId": f"cam{n}", "source": s} for n, s in enumerate(sources)]}
        config: dict[str, Any] = {
            "deviceId": self.settings.device_id,
            **cameras,
            "mqtt": self.edge_mqtt("detector"),
            "outbox": {"dir": str(self.detector_outbox)},
            "statsIntervalSeconds": 2,
            "logging": {"level": self.settings.log_level},
        }
        if self.settings.model is not None:
            config["detection"] = {"modelPath": str(self.settings.model)}
        return _merge(config, self.settings.detector_overrides)

    def start_edge_broker(self) -> Component:
        component = self._start("broker", self.broker_config())
        _wait_ready(self.edge_dir / SOCKET_NAME, self.edge_dir / "monitor.password", component)
        return component

    def start_logger(self) -> Component:
        return self._start("logger", self.logger_config(), self._edge_env())

    def start_detector(self, source: str | Sequence[str]) -> Component:
        return self._start("detector", self.detector_config(source), self._edge_env())

    def _edge_env(self) -> dict[str, str]:
        """What a recipe's Setenv gives the components on a device (a nucleus launcher sets it itself)."""
        return {EDGE_DIR_ENV: str(self.edge_dir)}

    # --- plumbing -------------------------------------------------------------------------------------

    def _start(self, name: str, config: dict[str, Any], env: Mapping[str, str] | None = None) -> Component:
        previous = self.components.get(name)
        if previous is not None and previous.running:
            raise RuntimeError(f"{name} is already running")
        component = Component(name, config, self.workdir / "work" / name, self.logs / f"{name}.log", dict(env or {}))
        component.workdir.mkdir(parents=True, exist_ok=True)
        launcher = command_launcher if name == "processor" else self.settings.launcher  # the cloud runs Docker
        launched = launcher(name, config, component.workdir, component.log, component.env)
        component.process, component.log, component.log_start = launched.process, launched.log, launched.log_start
        self.components[name] = component
        return component

    def restart(self, name: str) -> Component:
        component = self.components[name]
        component.stop()
        return self._start(name, component.config, component.env)

    def stop_all(self) -> None:
        for name in ("detector", "logger", "broker", "processor"):
            if name in self.components:
                self.components[name].stop()
        if self.link is not None:
            self.link.close()
        if self.cloud is not None:
            self.cloud.stop()
        if self.s3 is not None:
            self.s3.stop()
        if self._temporary_run_dir is not None:
            shutil.rmtree(self._temporary_run_dir, ignore_errors=True)

    def s3_client(self) -> Any:
        return self.s3.client() if self.s3 is not None else None


def _merge(base: dict[str, Any], overlay: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in overlay.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _short_run_dir(preferred: Path) -> Path:
    """preferred, unless its socket path would pass the 107 bytes a Unix socket address may have."""
    if len(os.fsencode(preferred / SOCKET_NAME)) <= 100:
        return preferred
    return Path(tempfile.mkdtemp(prefix="facecap-edge-")) / "local"


def _wait_ready(socket_path: Path, password: Path, component: Component, timeout: float = 20.0) -> None:
    """Until the broker listens on its socket with its identities written."""
    def ready() -> bool:
        if not component.running:
            raise ServerError(f"{component.name} exited early:\n{tail(component.log)}")
        # A live socket, not the file a killed broker left behind (the new one replaces it).
        return password.exists() and socket_listening(socket_path)

    if not wait_until(ready, timeout, 0.1):
        raise ServerError(f"{component.name} is not listening on {socket_path}:\n{tail(component.log)}")
