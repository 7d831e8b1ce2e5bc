"""A cloud broker in a network namespace of its own, with an uplink that can be cut the way a real one is.

The namespace is reached from the host over two veth pairs:
- the uplink, which the edge's bridge uses. `cut()` takes its namespace-side interface down: no RST, no
  ICMP; the host side keeps its route and its packets simply vanish, as on a modem that lost its carrier;
- the datacenter link, which the processor (or a test's subscriber) uses and which is never cut.

Needs root and `ip netns` (iproute2). Everything created is removed by `close()`, also after a failure:
the processes started inside are killed first, then the namespace is deleted, which takes the veth pairs
with it. Used by tests/test_uplink_cut.py and bench/recovery.py.
"""

from __future__ import annotations

import getpass
import os
import secrets
import shutil
import subprocess
import time
from pathlib import Path

from facecap.devkit.servers import CertificateAuthority, ServerError, find_binary, stop_process, tail

from .rig import Rig


def netns_problem() -> str | None:
    """Why network namespaces cannot be used here, or None when they can."""
    if shutil.which("ip") is None:
        return "iproute2 (`ip`) is not installed"
    if os.geteuid() != 0:
        return "network namespaces need root"
    probe = f"facecap-probe-{secrets.token_hex(3)}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True, check=False)
    if made.returncode != 0:
        return f"`ip netns add` failed: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True, check=False)
    return None


def _ip(*args: str) -> None:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise ServerError(f"ip {' '.join(args)}: {result.stderr.strip()}")


def _ip_tc(*args: str) -> None:
    result = subprocess.run(["tc", *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise ServerError(f"tc {' '.join(args)}: {result.stderr.strip()}")


class CloudNamespace(Rig):
    """The namespace and its two links. `uplink_address` and `datacenter_address` are the namespace's
    addresses as seen from the host."""

    def __init__(self) -> None:
        token = secrets.token_hex(3)
        self.name = f"facecap-{token}"
        # Interface names: at most 15 characters.
        self._links = {"uplink": (f"fc{token}uh", f"fc{token}un"), "datacenter": (f"fc{token}dh", f"fc{token}dn")}
        subnet = int(token[:2], 16)
        self._subnets = {"uplink": f"10.231.{subnet}", "datacenter": f"10.232.{subnet}"}
        self.uplink_address = f"{self._subnets['uplink']}.2"
        self.datacenter_address = f"{self._subnets['datacenter']}.2"
        self._processes: list[subprocess.Popen[bytes]] = []
        self._created = False

    def set_up(self) -> None:
        _ip("netns", "add", self.name)
        self._created = True
        self.inside("ip", "link", "set", "lo", "up")
        for link, (host_side, inner_side) in self._links.items():
            _ip("link", "add", host_side, "type", "veth", "peer", "name", inner_side, "netns", self.name)
            _ip("addr", "add", f"{self._subnets[link]}.1/24", "dev", host_side)
            _ip("link", "set", host_side, "up")
            self.inside("ip", "addr", "add", f"{self._subnets[link]}.2/24", "dev", inner_side)
            self.inside("ip", "link", "set", inner_side, "up")

    def inside(self, *argv: str) -> None:
        result = subprocess.run(["ip", "netns", "exec", self.name, *argv], capture_output=True, text=True,
                                check=False)
        if result.returncode != 0:
            raise ServerError(f"{' '.join(argv)} in {self.name}: {result.stderr.strip()}")

    def start(self, argv: list[str], log: Path) -> subprocess.Popen[bytes]:
        """Run a program inside the namespace (stopped by close())."""
        with open(log, "ab") as out:
            process = subprocess.Popen(["ip", "netns", "exec", self.name, *argv], stdout=out,
                                       stderr=subprocess.STDOUT)
        self._processes.append(process)
        return process

    def cut(self) -> None:
        """The uplink goes down on the cloud's side: the edge's packets vanish without an answer."""
        self.inside("ip", "link", "set", self._links["uplink"][1], "down")

    def restore(self) -> None:
        self.inside("ip", "link", "set", self._links["uplink"][1], "up")

    def slow_down(self, kbit: int, queue_seconds: float) -> None:
        """The uplink becomes a slow modem: `kbit` kbit/s towards the cloud, with a queue that holds
        `queue_seconds` of traffic before it drops (a token bucket on the host's side of the veth)."""
        limit = max(3000, int(kbit * 1000 / 8 * queue_seconds))
        _ip_tc("qdisc", "replace", "dev", self._links["uplink"][0], "root", "tbf", "rate", f"{kbit}kbit",
               "burst", "3000", "limit", str(limit))

    def close(self) -> None:
        for process in self._processes:
            stop_process(process)
        self._processes.clear()
        if self._created:
            # Deleting the namespace deletes its veth ends, and with them their host-side peers.
            subprocess.run(["ip", "netns", "del", self.name], capture_output=True, check=False)
            for host_side, _ in self._links.values():
                subprocess.run(["ip", "link", "del", host_side], capture_output=True, check=False)
            self._created = False


class NamespacedBroker:
    """A cloud Mosquitto inside `space`, TLS on one port of every address, password login only."""

    def __init__(self, space: CloudNamespace, folder: Path, ca: CertificateAuthority, users: dict[str, str],
                 port: int = 8883) -> None:
        self.space = space
        self.folder = folder
        self.port = port
        self.ca = ca
        folder.mkdir(parents=True, exist_ok=True)
        self.log_path = folder / "mosquitto.log"
        cert = ca.issue("namespace-broker", server=True,
                        addresses=(space.uplink_address, space.datacenter_address))
        passwords = folder / "passwords"
        passwords.write_text("")
        for name, password in users.items():
            subprocess.run([find_binary("mosquitto_passwd") or "mosquitto_passwd", "-b", str(passwords), name,
                            password], check=True, capture_output=True)
        self.conf = folder / "mosquitto.conf"
        self.conf.write_text("\n".join([
            f"listener {port} 0.0.0.0", f"cafile {ca.cert}", f"certfile {cert.cert}", f"keyfile {cert.key}",
            "allow_anonymous false", f"password_file {passwords}", f"user {getpass.getuser()}",
            f"log_dest file {self.log_path}", "log_type error", "log_type warning", "log_type notice",
            "log_type information", "log_timestamp_format %Y-%m-%dT%H:%M:%S", "max_queued_messages 100000",
            "set_tcp_nodelay true", "persistence false",
        ]) + "\n")
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> NamespacedBroker:
        binary = find_binary("mosquitto")
        if binary is None:
            raise ServerError("mosquitto is not installed")
        self.process = self.space.start([binary, "-c", str(self.conf)], self.folder / "stdout.log")
        deadline = time.monotonic() + timeout
        while "running" not in self.log_text() and time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerError(f"mosquitto in {self.space.name} exited:\n{tail(self.log_path)}")
            time.sleep(0.05)
        if "running" not in self.log_text():
            raise ServerError(f"mosquitto in {self.space.name} did not start:\n{tail(self.log_path)}")
        return self

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
