"""Checks that a BrokerConfig can run on this machine, before Mosquitto starts.

Mosquitto itself would start happily with most of these mistakes and then fail quietly in its log (or,
worse, connect without TLS), so every problem is reported up front, each with the key to fix.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import shutil
import socket
from pathlib import Path

from ..edgelocal import SOCKET_NAME, socket_listening
from ..errors import ConfigError
from ..validation import file_problem
from .config import BrokerConfig
from .render import local_run_dir

COMPONENT = "broker"
# Debian and Ubuntu install the broker in sbin, which is not on a service account's PATH.
MOSQUITTO_LOCATIONS = ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto")



class Problems(list[tuple[str, str]]):
    """(key, reason) pairs; `files` are those about a file or folder that must exist on the machine the
    broker runs on, which `facecap validate-config` on another machine reports as warnings."""

    def __init__(self) -> None:
        super().__init__()
        self.files: list[tuple[str, str]] = []

    def missing_file(self, key: str, reason: str) -> None:
        self.append((key, reason))
        self.files.append((key, reason))


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve anywhere


def find_mosquitto(configured: str) -> str | None:
    if configured:
        return configured if os.access(configured, os.X_OK) and Path(configured).is_file() else None
    found = shutil.which("mosquitto")
    return found or next((p for p in MOSQUITTO_LOCATIONS if os.access(p, os.X_OK)), None)


def _readable_file(key: str, path: str, what: str, problems: Problems) -> None:
    problem = file_problem(path, what)
    if problem:
        problems.missing_file(key, problem)


def read_first_line(path: str) -> str:
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return lines[0] if lines else ""


def carries_faces(config: BrokerConfig) -> bool:
    """Whether an `out` (or `both`) topic of the bridge covers <topicPrefix>/<deviceId>/<camera>. A device or
    camera level the configuration does not fix (the thing name, any camera) matches whatever the filter
    names there."""
    levels: list[str | None] = [*config.topic_prefix.split("/"), config.device_id or None, None]
    for line in config.bridge.topics:
        parts = line.split()
        if len(parts) > 1 and parts[1] == "in":
            continue
        local_prefix = parts[3] if len(parts) == 5 else ""
        if _may_match((local_prefix + parts[0]).split("/"), levels):
            return True
    return False


def _may_match(pattern: list[str], levels: list[str | None]) -> bool:
    for index, part in enumerate(pattern):
        if part == "#":
            return True
        if index >= len(levels) or (part != "+" and levels[index] not in (None, part)):
            return False
    return len(pattern) == len(levels)


def _check_bridge(config: BrokerConfig, problems: Problems) -> None:
    bridge = config.bridge  # with a host: without one the broker runs local-only (without_unset_bridge)
    if not carries_faces(config):
        problems.append(("bridge.topics", f"no out topic carries the faces ({config.topic_prefix}/<deviceId>/"
                                          f"<cameraId>), so none would reach the cloud; add "
                                          f"'{config.topic_prefix}/# out 1'"))
    if not bridge.tls and not is_loopback(bridge.host) and not bridge.allow_plaintext:
        problems.append(("bridge.tls", f"TLS is off towards {bridge.host}, so faces and credentials would "
                                       "cross the network unencrypted; set tls true, or "
                                       "bridge.allowPlaintext true to accept that"))
    if bridge.tls:
        if bridge.ca_file:
            _readable_file("bridge.caFile", bridge.ca_file, "CA file", problems)
        elif not Path(bridge.ca_path).is_dir():
            problems.missing_file("bridge.caPath", f"CA folder {bridge.ca_path} does not exist; set "
                                                   "bridge.caFile to the CA of the cloud broker")
        if bridge.cert_file:
            _readable_file("bridge.certFile", bridge.cert_file, "certificate", problems)
            _readable_file("bridge.keyFile", bridge.key_file, "private key", problems)
    elif bridge.cert_file:
        problems.append(("bridge.certFile", "a client certificate needs bridge.tls true"))
    if bridge.password_file:
        before = len(problems)
        _readable_file("bridge.passwordFile", bridge.password_file, "password file", problems)
        if len(problems) == before:
            password = read_first_line(bridge.password_file)
            if not password:
                problems.append(("bridge.passwordFile", f"{bridge.password_file} is empty"))
            elif password != password.strip() or any(ord(c) < 32 or ord(c) == 127 for c in password):
                problems.append(("bridge.passwordFile", "the password must not begin or end with blanks or "
                                                        "contain control characters (mosquitto.conf trims "
                                                        "them)"))


# sun_path holds 108 bytes with the final NUL; Mosquitto (and every client) fails on a longer socket path.
MAX_SOCKET_PATH = 107


def _check_local(config: BrokerConfig, work_dir: Path, problems: Problems, starting: bool) -> None:
    """The run folder of the socket and the credentials: short enough, ours, creatable, not in use."""
    local = config.local
    run_dir = Path(local_run_dir(config, str(work_dir.resolve())))
    if not run_dir.is_absolute():
        problems.append(("local.runDir", f"{run_dir} must be an absolute path (the other components look for "
                                         "the socket there)"))
        return
    socket_path = run_dir / SOCKET_NAME
    if local.socket:
        _check_socket_path(socket_path, starting, problems)
    existing = next((p for p in (run_dir, *run_dir.parents) if p.exists()), None)
    if run_dir.exists():
        if not run_dir.is_dir():
            problems.append(("local.runDir", f"{run_dir} is not a folder"))
        elif run_dir.stat().st_uid != os.geteuid():
            problems.append(("local.runDir", f"{run_dir} belongs to uid {run_dir.stat().st_uid}, not to uid "
                                             f"{os.geteuid()} (the component's user)"))
    elif existing is not None and not os.access(existing, os.W_OK | os.X_OK):
        problems.append(("local.runDir", f"cannot create {run_dir}: {existing} is not writable by uid "
                                         f"{os.geteuid()}"))


def _check_socket_path(socket_path: Path, starting: bool, problems: Problems) -> None:
    if len(os.fsencode(socket_path)) > MAX_SOCKET_PATH:
        problems.append(("local.runDir", f"the socket path {socket_path} is longer than {MAX_SOCKET_PATH} "
                                         "bytes, the limit of a Unix socket address; choose a shorter runDir"))
    if any(char.isspace() for char in str(socket_path)):
        # Mosquitto 2.0 reads a listener's path only up to the first blank: the socket would be made (and a
        # file there removed) outside the run folder, where no component looks for it.
        problems.append(("local.runDir", f"the socket path {socket_path} contains a blank, which Mosquitto cuts "
                                         "it at; choose a runDir without blanks"))
    if starting and socket_listening(socket_path):
        problems.append(("local.runDir", f"a broker already listens on {socket_path}: another EdgeBroker runs "
                                         "in this folder; stop it first (two would share one store)"))


def _port_taken(address: str, port: int) -> bool:
    """True when another process listens on the address (the bind Mosquitto will try would fail)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        # As Mosquitto does, so a port held only by connections in TIME_WAIT counts as free.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((address, port))
        except OSError as exc:
            return exc.errno == errno.EADDRINUSE
    return False


def _check_persistence(config: BrokerConfig, work_dir: Path, create: bool, problems: Problems) -> None:
    if not config.persistence.enabled:
        return
    folder = Path(config.persistence.dir or work_dir)
    key = "persistence.dir"
    if create:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            problems.missing_file(key, f"cannot create {folder}: {exc.strerror}")
            return
    if not folder.is_dir():
        problems.missing_file(key, f"{folder} does not exist")
    elif not os.access(folder, os.W_OK | os.X_OK):
        problems.missing_file(key, f"{folder} is not writable by uid {os.geteuid()}")


def preflight(config: BrokerConfig, work_dir: Path, *, starting: bool = True) -> str:
    """Raise ConfigError listing every problem; return the mosquitto binary to run.

    starting: the broker is about to start, so a missing persistence folder is created instead of
    reported, and the listener port must be free. Off for `broker render`, which may well be run beside
    the broker that holds the port."""
    problems = preflight_problems(config, work_dir, starting=starting)
    if problems:
        raise ConfigError(COMPONENT, problems)
    binary = find_mosquitto(config.mosquitto_path)
    assert binary is not None
    return binary


def preflight_problems(config: BrokerConfig, work_dir: Path, *, starting: bool = False) -> Problems:
    """Every problem `preflight` would raise; with starting False, none needs the network or the port
    (what `facecap validate-config broker` runs)."""
    problems = Problems()
    if find_mosquitto(config.mosquitto_path) is None:
        where = config.mosquitto_path or "on PATH or in " + ", ".join(MOSQUITTO_LOCATIONS)
        problems.missing_file("mosquittoPath", f"no mosquitto binary {where}; install it (apt-get install "
                                               "mosquitto) or set mosquittoPath")
    if config.bridge.enabled:
        _check_bridge(config, problems)
    _check_local(config, work_dir, problems, starting)
    if starting and config.local.tcp and _port_taken(config.local.bind_address, config.local.port):
        problems.append(("local.port", f"{config.local.bind_address}:{config.local.port} is already in use; "
                                       "if it is the mosquitto system service that the Debian package starts, "
                                       "stop it: sudo systemctl disable --now mosquitto"))
    _check_persistence(config, work_dir, starting, problems)
    return problems
