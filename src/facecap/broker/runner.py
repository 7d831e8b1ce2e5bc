"""Run the EdgeBroker: check the configuration, write mosquitto.conf, run Mosquitto in the foreground.

Mosquitto stays our child rather than replacing this process, so that its exit is logged with the reason
and the exit code is handed back to Greengrass; SIGTERM, SIGINT and SIGHUP (reload) are passed on to it.
"""

from __future__ import annotations

import ctypes
import logging
import os
import pwd
import signal
import subprocess
import sys
from pathlib import Path
from types import FrameType

from ..config import resolve_device_id
from ..mqtt.local import SOCKET_NAME
from .config import BrokerConfig
from .credentials import write_credentials, write_private
from .preflight import preflight, read_first_line
from .render import PASSWORD_MASK, bridge_client_id, bridge_state_topic, forwards_tls, local_run_dir, render_conf
from .tlsforward import TlsForwarder, bridge_tls_context

log = logging.getLogger(__name__)

CONF_NAME = "mosquitto.conf"
FORWARDED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def current_user() -> str:
    return pwd.getpwuid(os.geteuid()).pw_name


def conf_text(config: BrokerConfig, work_dir: Path, *, masked: bool, forwarder_port: int | None = None) -> str:
    """The mosquitto.conf for this machine; with masked, the cloud password is replaced for display.
    forwarder_port: where the TLS forwarder listens, when it runs."""
    password = ""
    if config.bridge.enabled and config.bridge.password_file:
        password = PASSWORD_MASK if masked else read_first_line(config.bridge.password_file)
    return render_conf(
        config,
        device_id=resolve_device_id(config.device_id),
        work_dir=str(work_dir.resolve()),
        password=password,
        user=current_user(),
        forwarder_port=forwarder_port,
    )


def _die_with_parent() -> None:
    """In the child before exec: if this process is killed outright, Mosquitto gets SIGTERM instead of
    living on as an orphan that holds the port."""
    if sys.platform.startswith("linux"):
        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, int(signal.SIGTERM), 0, 0, 0)


class EdgeBrokerRunner:
    """The EdgeBroker: its configuration and the folder it writes mosquitto.conf to and runs in."""

    def __init__(self, config: BrokerConfig, work_dir: Path) -> None:
        self.config = config
        self.work_dir = work_dir

    def conf_text(self, *, masked: bool) -> str:
        """The mosquitto.conf it would run, for `facecap broker render` (no forwarder yet)."""
        return conf_text(self.config, self.work_dir, masked=masked)

    def run(self) -> int:
        """Run Mosquitto until it exits; return its exit code (128 + n when it died of signal n).

        When facecap does the bridge's TLS, the forwarder listens before Mosquitto starts (its port goes
        into the conf) and stops only after Mosquitto has exited, so the bridge never loses its way out
        early."""
        config, work_dir = self.config, self.work_dir
        binary = preflight(config, work_dir)
        # Loads the CA and client certificate now, so a file that exists but does not load stops the start
        # with its key named, instead of every connection failing later.
        context = bridge_tls_context(config.bridge) if forwards_tls(config) else None
        forwarder = TlsForwarder(config.bridge.host, config.bridge.port, context,
                                 dead_link_seconds=config.bridge.keep_alive_seconds).start() if context else None
        try:
            return _run_mosquitto(config, work_dir, binary, forwarder)
        finally:
            if forwarder is not None:
                forwarder.stop()


def _prepare_local(config: BrokerConfig, work_dir: Path, device_id: str) -> str:
    """Write the local identities' passwords, the password file and the ACL; clear a socket left by a
    killed broker. Returns the listeners, for the log."""
    run_dir = Path(local_run_dir(config, str(work_dir.resolve())))
    write_credentials(run_dir, device_id, config.topic_prefix)
    socket_path = run_dir / SOCKET_NAME
    if socket_path.is_socket():
        socket_path.unlink()
    listeners = [str(socket_path)] if config.local.socket else []
    if config.local.tcp:
        listeners.append(f"{config.local.bind_address}:{config.local.port}")
    return " and ".join(listeners)


def _run_mosquitto(config: BrokerConfig, work_dir: Path, binary: str, forwarder: TlsForwarder | None) -> int:
    conf_path = work_dir / CONF_NAME
    device_id = resolve_device_id(config.device_id)
    listeners = _prepare_local(config, work_dir, device_id)
    write_private(conf_path, conf_text(config, work_dir, masked=False,
                                       forwarder_port=forwarder.port if forwarder else None))
    if config.bridge.enabled:
        tls = "off" if not config.bridge.tls else "by facecap" if forwarder else "by mosquitto"
        log.info("bridge %s to %s:%d as %s (tls %s); state on %s", config.bridge.name, config.bridge.host,
                 config.bridge.port, bridge_client_id(config, device_id), tls,
                 bridge_state_topic(config, device_id))
    else:
        log.warning("bridge disabled: faces stay on this device")
    if os.geteuid() == 0:
        log.warning("running the broker as root; a Greengrass component normally runs as ggc_user")
    log.info("starting %s -c %s (listening on %s)", binary, conf_path, listeners)
    sys.stdout.flush()

    child = subprocess.Popen([binary, "-c", str(conf_path)], cwd=work_dir, preexec_fn=_die_with_parent)  # noqa: PLW1509 - only prctl, no locks

    def forward(signum: int, _frame: FrameType | None) -> None:
        if child.poll() is None:
            child.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in FORWARDED_SIGNALS}
    try:
        code = child.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if code < 0:
        log.info("mosquitto stopped by signal %s", signal.Signals(-code).name)
        return 128 - code
    if code != 0:
        log.error("mosquitto exited with code %d; its log above says why", code)
    else:
        log.info("mosquitto stopped")
    return code
