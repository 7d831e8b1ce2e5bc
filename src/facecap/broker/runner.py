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
import socket
import subprocess
import sys
import threading
from pathlib import Path
from types import FrameType

from ..config import resolve_device_id
from ..edgelocal import SOCKET_NAME, socket_listening
from ..greengrass.component import ComponentIpc
from ..logs import setup_logging
from .certlife import CertificateWatch, bridge_files, identity_mismatch
from .config import BrokerConfig, without_unset_bridge
from .credentials import write_credentials, write_private
from .preflight import preflight, read_first_line
from .render import PASSWORD_MASK, bridge_client_id, bridge_state_topic, forwards_tls, local_run_dir, render_conf
from .store import set_aside_unreadable_store
from .tlsfiles import BridgeTlsFiles
from .tlsforward import TlsForwarder

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


def _listening(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=0.5):
            return True
    except OSError:
        return False


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


class EdgeBrokerRunner:
    """The EdgeBroker: its configuration and the folder it writes mosquitto.conf to and runs in."""

    def __init__(self, config: BrokerConfig, work_dir: Path, ipc: ComponentIpc[BrokerConfig] | None = None) -> None:
        self.config = without_unset_bridge(config)
        self.bridge_unset = self.config is not config
        self.work_dir = work_dir
        self.ipc = ipc
        self._child: subprocess.Popen[bytes] | None = None
        self._forwarder_port: int | None = None
        if ipc is not None:
            ipc.on_change(self.apply_live)

    def conf_text(self, *, masked: bool) -> str:
        """The mosquitto.conf it would run, for `facecap broker render` (no forwarder yet)."""
        return conf_text(self.config, self.work_dir, masked=masked)

    def apply_live(self, config: BrokerConfig, keys: frozenset[str]) -> None:
        """Queue limits, message size limit and log types: rewrite mosquitto.conf and make Mosquitto reread it
        (SIGHUP), so neither the broker nor the components that depend on it restart. facecap's own logging
        settings apply at once."""
        if "logging" in keys:
            setup_logging(config.logging.level, config.logging.format)
        self.config = without_unset_bridge(config)
        child = self._child
        if keys - {"logging"} and child is not None and child.poll() is None:
            write_private(self.work_dir / CONF_NAME, conf_text(self.config, self.work_dir, masked=False,
                                                               forwarder_port=self._forwarder_port))
            child.send_signal(signal.SIGHUP)
            log.info("mosquitto.conf rewritten and reloaded (SIGHUP) for %s", ", ".join(sorted(keys)))

    def run(self) -> int:
        """Run Mosquitto until it exits; return its exit code (128 + n when it died of signal n).

        When facecap does the bridge's TLS, the forwarder listens before Mosquitto starts (its port goes
        into the conf) and stops only after Mosquitto has exited, so the bridge never loses its way out
        early."""
        config, work_dir = self.config, self.work_dir
        if self.bridge_unset:
            log.warning("bridge.host is empty: running a LOCAL-ONLY broker, faces stay on this device. Set "
                        "bridge.host (and the TLS files) in a deployment to bridge them to the cloud broker, or "
                        "bridge.enabled false to silence this warning.")
        binary = preflight(config, work_dir)
        if config.persistence.enabled:  # preflight made sure the folder is there
            set_aside_unreadable_store(Path(config.persistence.dir or work_dir))
        # Loads the CA and client certificate now, so a file that exists but does not load stops the start
        # with its key named, instead of every connection failing later. Files replaced later are loaded
        # again at the next connection (a certificate rotated without a restart).
        tls_files = BridgeTlsFiles(config.bridge, config.bridge.certificate_warning_days,
                                   resolve_device_id(config.device_id)) if forwards_tls(config) else None
        forwarder = TlsForwarder(config.bridge.host, config.bridge.port, tls_files.context,
                                 dead_link_seconds=config.bridge.dead_link_seconds,
                                 certificate_warning_days=config.bridge.certificate_warning_days,
                                 ).start() if tls_files else None
        self._forwarder_port = forwarder.port if forwarder else None
        watch = CertificateWatch(
            bridge_files(config.bridge.cert_file, config.bridge.ca_file)
            if config.bridge.enabled and config.bridge.tls else [],
            config.bridge.certificate_warning_days, also=tls_files.daily_check if tls_files else None).start()
        try:
            return self._run_mosquitto(binary)
        finally:
            watch.stop()
            if forwarder is not None:
                forwarder.stop()

    def _start_mosquitto(self, binary: str) -> subprocess.Popen[bytes]:
        config, work_dir = self.config, self.work_dir
        conf_path = work_dir / CONF_NAME
        device_id = resolve_device_id(config.device_id)
        listeners = _prepare_local(config, work_dir, device_id)
        write_private(conf_path, conf_text(config, work_dir, masked=False, forwarder_port=self._forwarder_port))
        if config.bridge.enabled:
            tls = "off" if not config.bridge.tls else "by facecap" if self._forwarder_port else "by mosquitto"
            log.info("bridge %s to %s:%d as %s (tls %s); state on %s", config.bridge.name, config.bridge.host,
                     config.bridge.port, bridge_client_id(config, device_id), tls,
                     bridge_state_topic(config, device_id))
        elif not self.bridge_unset:
            log.warning("bridge disabled: faces stay on this device")
        if os.geteuid() == 0:
            log.warning("running the broker as root; a Greengrass component normally runs as ggc_user")
        if unused := config.persistence.unused_interval():
            log.warning("persistence.autosaveIntervalSeconds %s", unused)
        if mismatch := identity_mismatch(config.bridge, device_id):
            log.warning("bridge.certFile: %s", mismatch)
        log.info("starting %s -c %s (listening on %s)", binary, conf_path, listeners)
        sys.stdout.flush()
        return subprocess.Popen([binary, "-c", str(conf_path)], cwd=work_dir, preexec_fn=_die_with_parent)  # noqa: PLW1509 - only prctl, no locks

    def _ready_socket(self) -> Path | None:
        """The socket whose listening means ready; None when the broker listens on TCP only."""
        if not self.config.local.socket:
            return None
        return Path(local_run_dir(self.config, str(self.work_dir.resolve()))) / SOCKET_NAME

    def _run_mosquitto(self, binary: str) -> int:
        child = self._child = self._start_mosquitto(binary)
        ready_socket, local = self._ready_socket(), self.config.local

        def forward(signum: int, _frame: FrameType | None) -> None:
            if child.poll() is None:
                child.send_signal(signum)

        previous = {sig: signal.signal(sig, forward) for sig in FORWARDED_SIGNALS}
        stopped = threading.Event()
        if self.ipc is not None:
            what = str(ready_socket) if ready_socket else f"{local.bind_address}:{local.port}"
            self.ipc.report_when_ready(
                lambda: child.poll() is None and (socket_listening(ready_socket) if ready_socket
                                                  else _listening(local.bind_address, local.port)),
                stopped, f"the listener on {what}")
        try:
            code = child.wait()
        finally:
            stopped.set()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return _exit_code(code)


def _exit_code(code: int) -> int:
    if code < 0:
        log.info("mosquitto stopped by signal %s", signal.Signals(-code).name)
        return 128 - code
    if code != 0:
        log.error("mosquitto exited with code %d; its log above says why", code)
    else:
        log.info("mosquitto stopped")
    return code
