"""`facecap broker` run for real as a child process, for the broker tests and the end-to-end tests.

    edge = EdgeBroker(tmp_path / "edge", bridge_to(cloud), device_id="jetson-1").start()
    assert edge.wait_bridge_state("1")
    client = MqttClient(edge.settings("detector"), "detector")   # the Unix socket, as the detector
    edge.stop()

The broker runs through the real command (`python -m facecap.cli broker --config JSON`) in its own work
folder, as Greengrass would run it, so rendering, preflight, the 0600 conf and the signal pass-through are
all exercised. Local clients log in with the identities the broker generated (`settings(identity)`): the
socket by default, the TCP listener (also on, for the raw probes) with `tcp=True`. Its output (facecap's
lines and Mosquitto's log) is in `log_text()`.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from facecap.devkit.servers import LOOPBACK, MosquittoServer, free_port, stop_process, tail, wait_for_port
from facecap.mqtt import MqttClient, MqttSettings, ReceivedMessage
from facecap.polling import wait_until


def bridge_to(cloud: MosquittoServer, **overrides: Any) -> dict[str, Any]:
    """The `bridge` section for a test cloud broker: TLS with its CA when it serves TLS, plain TCP on
    loopback otherwise, and a fast reconnect so tests do not wait for the production backoff."""
    section: dict[str, Any] = {
        "host": cloud.host,
        "port": cloud.port,
        "tls": cloud.tls,
        "restartBaseSeconds": 1,
        "restartCapSeconds": 2,
    }
    if cloud.tls and cloud.ca is not None:
        section["caFile"] = str(cloud.ca.cert)
    section.update(overrides)
    return section


class EdgeBroker:
    """The EdgeBroker as Greengrass runs it: `facecap broker` in a work folder."""

    def __init__(
        self,
        folder: Path,
        bridge: dict[str, Any] | None = None,
        *,
        device_id: str = "jetson-test",
        port: int | None = None,
        extra: dict[str, Any] | None = None,
        env: dict[str, str] | None = None,
        run_dir: Path | None = None,
    ) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        # A socket path has at most 107 bytes; pytest's folders can be longer.
        self.run_dir = run_dir or folder / "local"
        if run_dir is None and len(str(self.run_dir / "mosquitto.sock")) > 100:
            self.run_dir = Path(tempfile.mkdtemp(prefix="fc-edge-")) / "local"
        self.host = LOOPBACK
        self.port = port or free_port()
        self.device_id = device_id
        self.config: dict[str, Any] = {
            "deviceId": device_id,
            "local": {"bindAddress": LOOPBACK, "port": self.port, "tcp": True, "runDir": str(self.run_dir)},
            "bridge": bridge if bridge is not None else {"enabled": False},
            "persistence": {"autosaveIntervalSeconds": 1},
        }
        self.config.update(extra or {})
        self.env = env
        self.log_path = folder / "broker.log"
        self.conf_path = folder / "mosquitto.conf"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def state_topic(self) -> str:
        client_id = self.config.get("bridge", {}).get("clientId") or f"facecap-edge-{self.device_id}"
        return f"$SYS/broker/connection/{client_id}/state"

    @property
    def socket_path(self) -> Path:
        return self.run_dir / "mosquitto.sock"

    def password(self, identity: str) -> str:
        return (self.run_dir / f"{identity}.password").read_text().splitlines()[0]

    def settings(self, identity: str = "monitor", tcp: bool = False, **options: Any) -> MqttSettings:
        """How a local client with one of the broker's identities connects: the socket, or TCP."""
        where: dict[str, Any] = ({"host": self.host, "port": self.port} if tcp
                                 else {"socket_path": str(self.socket_path)})
        return MqttSettings(**where, username=identity, password_file=str(self.run_dir / f"{identity}.password"),
                            **{"connect_timeout_seconds": 5, **options})

    def command(self) -> list[str]:
        return [sys.executable, "-m", "facecap.cli", "broker", "--config", json.dumps(self.config)]

    def start(self, timeout: float = 15.0) -> EdgeBroker:
        with open(self.log_path, "ab") as out:
            self.process = subprocess.Popen(self.command(), cwd=self.folder, stdout=out, stderr=subprocess.STDOUT,
                                            env=self.env)
        wait_for_port(self.port, self.process, timeout, self.log_path)
        return self

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM, as Greengrass stops a component; returns the exit code."""
        stop_process(self.process, timeout)
        return self.process.returncode if self.process else None

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = 40) -> str:
        return tail(self.log_path, lines)

    def wait_for_log(self, text: str, timeout: float = 15.0) -> bool:
        return wait_until(lambda: text in self.log_text(), timeout, 0.1)

    def answers(self, timeout: float = 2.0) -> bool:
        """Whether the local TCP listener completes an MQTT handshake within timeout: a bare MQTT 3.1.1
        CONNECT (clean session, empty client id, the monitor identity) answered by an accepting CONNACK. Raw
        bytes, so nothing retries."""
        user, password = b"monitor", self.password("monitor").encode()
        payload = (b"\x00\x00" + len(user).to_bytes(2, "big") + user + len(password).to_bytes(2, "big")
                   + password)
        variable = b"\x00\x04MQTT\x04\xc2\x00\x3c"  # username and password flags, clean session
        connect = b"\x10" + bytes([len(variable) + len(payload)]) + variable + payload
        try:
            with socket.create_connection((self.host, self.port), timeout=timeout) as sock:
                sock.sendall(connect)
                answer = b""
                while len(answer) < 4:
                    chunk = sock.recv(4 - len(answer))
                    if not chunk:
                        return False
                    answer += chunk
                return answer == b"\x20\x02\x00\x00"
        except OSError:  # includes the timeout
            return False

    def bridge_state(self, timeout: float = 2.0) -> str | None:
        """The retained bridge state on the edge broker: "1" connected, "0" not, None if never set."""
        got: list[bytes] = []
        arrived = threading.Event()

        def on_message(message: ReceivedMessage) -> None:
            got.append(message.payload)
            arrived.set()

        # As the detector: its outbox follows this state, so the ACL must let it read it.
        client = MqttClient(self.settings("detector"), f"state-probe-{time.monotonic_ns()}", on_message=on_message)
        client.start()
        try:
            client.subscribe(self.state_topic)
            arrived.wait(timeout)
        finally:
            client.stop(timeout=1)
        return got[-1].decode() if got else None

    def wait_bridge_state(self, expected: str, timeout: float = 20.0) -> bool:
        return wait_until(lambda: self.bridge_state(timeout=1.0) == expected, timeout)
