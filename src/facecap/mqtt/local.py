"""Reaching the EdgeBroker on the device: its Unix socket and this component's local identity.

The EdgeBroker keeps its socket and one password file per identity in its run folder (0700). The recipes
of the other components set FACECAP_EDGE_BROKER_DIR to that folder (a fixed place under the Greengrass
root), so `mqtt.socketPath: auto` needs no per-device configuration. Greengrass starts a component as soon
as the broker's process runs, before Mosquitto listens, so the socket and the password are waited for
(up to connectTimeoutSeconds) instead of failing the first start.
"""

from __future__ import annotations

import errno
import os
import stat
import time
from collections.abc import Mapping
from pathlib import Path

from ..edgelocal import EDGE_DIR_ENV, SOCKET_NAME, password_path
from ..errors import MqttConnectError
from .settings import AUTO_SOCKET, MqttSettings

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def resolve_local(settings: MqttSettings, identity: str, env: Mapping[str, str] | None = None) -> MqttSettings:
    """`settings` with `socketPath: auto` made concrete: the EdgeBroker's socket and, when no username is
    configured, the identity's user name and password file; plain TCP when not running beside it, or when
    the configuration names another broker (a host other than loopback, or TLS)."""
    if settings.socket_path != AUTO_SOCKET:
        return settings
    edge_dir = (os.environ if env is None else env).get(EDGE_DIR_ENV, "")
    # A broker elsewhere (another host, or TLS) is what the configuration asks for: keep to it.
    if not edge_dir or settings.host not in LOOPBACK_HOSTS or settings.tls:
        return settings.model_copy(update={"socket_path": ""})
    update: dict[str, object] = {"socket_path": str(Path(edge_dir) / SOCKET_NAME)}
    if not settings.username:
        update.update(username=identity, password_file=str(password_path(Path(edge_dir), identity)))
    return settings.model_copy(update=update)


def _problem(path: str, want_socket: bool) -> str | None:
    """Why `path` cannot be used yet, or None. A missing path is "missing" (it may still appear)."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return "missing"
    except OSError as exc:
        if exc.errno == errno.EACCES:
            return f"permission denied for uid {os.geteuid()} (a folder on the way is not open to this user)"
        return exc.strerror or str(exc)
    if want_socket and not stat.S_ISSOCK(info.st_mode):
        return "is not a Unix socket"
    wanted = os.R_OK | os.W_OK if want_socket else os.R_OK
    if not os.access(path, wanted):
        return f"permission denied for uid {os.geteuid()}"
    return None


def check_local_paths(settings: MqttSettings, wait_seconds: float = 0.0) -> None:
    """Raise MqttConnectError naming the path when the socket (or the password file) is missing or not
    open to this user; a missing one is waited for up to wait_seconds (the broker may still be starting)."""
    checks = []
    if settings.uses_socket:
        checks.append(("mqtt.socketPath", settings.socket_path, True))
    if settings.password_file:
        checks.append(("mqtt.passwordFile", settings.password_file, False))
    deadline = time.monotonic() + wait_seconds
    for key, path, want_socket in checks:
        while (problem := _problem(path, want_socket)) == "missing" and time.monotonic() < deadline:
            time.sleep(0.1)
        if problem == "missing":
            what = "no such socket" if want_socket else "no such file"
            hint = " (is the EdgeBroker running, with local.socket true?)" if want_socket else ""
            raise MqttConnectError(f"{key}: {path}: {what}{hint}")
        if problem is not None:
            raise MqttConnectError(f"{key}: {path}: {problem}")


def local_settings(settings: MqttSettings, identity: str) -> MqttSettings:
    """resolve_local, then wait for its paths: what a device component connects with."""
    resolved = resolve_local(settings, identity)
    check_local_paths(resolved, wait_seconds=resolved.connect_timeout_seconds)
    return resolved
