"""The bridge's TLS files, loaded again when they change, so a rotated certificate needs no restart.

A certificate is rotated by copying new files over the old ones (cloud/README.md, "Rotate a certificate"),
on one device or, for a CA, on every device of a fleet. facecap's TLS forwarder makes a new connection to
the cloud whenever Mosquitto's bridge connects, so it reads the files then (a few KB): when the content of
any of them changed (a copy over it or a rename onto it), it loads them again, and that connection and the
later ones use them. A connection already open keeps the certificate it was made with: the cloud broker
checks a certificate only at the handshake, so cutting a working link would gain nothing.

Files caught half-copied (the new certificate beside the old key) do not load: the forwarder goes on with
what it loaded before, says so once, and tries them again at a connection a minute later (or at once when
they change again), and the daily certificate watch says so again each day while they do not load.
"""

from __future__ import annotations

import hashlib
import logging
import os
import ssl
import threading
import time
from datetime import datetime, timezone

from ..errors import ConfigError
from .certlife import Certificate, bridge_files, check_files, describe, identity_mismatch, notice, read_certificates
from .config import BridgeSettings
from .tlsforward import bridge_tls_context

log = logging.getLogger(__name__)

# Files that did not load are tried again at a connection this long after: a copy that was still being
# written when they were read (the same content copied again) is then loaded, with nothing more to do.
RETRY_SECONDS = 60.0

# Per path, a digest of the file's content, or of a folder's listing; None: missing or unreadable.
_Stamp = tuple[str | None, ...]


class BridgeTlsFiles:
    """The bridge's client TLS context (bridge_tls_context), made again from its files when they change.

    The first load raises ConfigError naming the key, so a file that does not load stops the start. Then
    `context()` runs on the forwarder's thread at each connection and `daily_check()` on the certificate
    watch's, hence the lock."""

    def __init__(self, bridge: BridgeSettings, warning_days: int = 0, device_id: str = "") -> None:
        self.bridge = bridge
        self.warning_days = warning_days
        self.device_id = device_id  # the certificate must name it, for facecap's cloud broker (empty: unchecked)
        # caPath is a folder of CAs and their c_rehash links: a CA added or removed there changes its listing.
        self.paths = [path for path in (bridge.ca_file or bridge.ca_path, bridge.cert_file, bridge.key_file)
                      if path]
        self._lock = threading.Lock()
        self._stamp = self._read_stamp()  # before loading: a change during the load is seen next time
        self._context = bridge_tls_context(bridge)
        self._in_use = self._device_certificate()  # of the certFile loaded, for the warnings
        self._refused: _Stamp | None = None  # files on disk that did not load, and why
        self._refusal = ""
        self._retry_at = 0.0

    def context(self) -> ssl.SSLContext:
        """The context for a new connection: the one loaded before, unless the files have changed since and
        now load."""
        with self._lock:
            stamp = self._read_stamp()
            if stamp == self._stamp:
                self._refused = None  # the files are (back to) what is loaded
                return self._context
            if stamp == self._refused and time.monotonic() < self._retry_at:
                return self._context
            try:
                context = bridge_tls_context(self.bridge)
            except Exception as exc:  # noqa: BLE001 - whatever the files hold, the bridge keeps its context
                self._refuse(stamp, exc)
                return self._context
            changed = [path for path, before, now in zip(self.paths, self._stamp, stamp, strict=True)
                       if before != now]
            self._context, self._stamp, self._refused = context, stamp, None
            self._in_use = self._device_certificate()
            in_use = self._in_use
        log.info("the bridge's TLS files changed (%s): loaded again; connections to the cloud from now on use "
                 "them%s", ", ".join(changed), _said(in_use))
        check_files(bridge_files(self.bridge.cert_file, self.bridge.ca_file), self.warning_days)
        if mismatch := identity_mismatch(self.bridge, self.device_id):
            log.warning("bridge.certFile: %s", mismatch)
        return context

    def daily_check(self, now: datetime | None = None) -> None:
        """From the daily certificate watch: load files that changed (so a bridge that stays connected finds
        them ready), and while the files on disk do not load, say so again, with the dates of the certificate
        the bridge goes on with: the watch's own check reads the files on disk, not that one."""
        self.context()
        with self._lock:
            refusal = self._refusal if self._refused is not None else ""
            in_use = self._in_use
        if not refusal:
            return
        now = now or datetime.now(timezone.utc)
        log.warning("the bridge's TLS files on disk still do not load (%s): the bridge goes on with the ones "
                    "loaded before%s", refusal, _said(in_use, now))
        found = in_use and self.warning_days > 0 and notice(
            "the certificate the bridge goes on with", in_use, "the cloud broker refuses the bridge", now,
            self.warning_days)
        if found:
            log.log(*found)

    def _refuse(self, stamp: _Stamp, exc: Exception) -> None:
        """Keep the context loaded before; say why once per content of the files (caller holds the lock)."""
        reason = "; ".join(f"{key}: {why}" for key, why in exc.problems) if isinstance(exc, ConfigError) \
            else f"{type(exc).__name__}: {exc}"
        self._retry_at = time.monotonic() + RETRY_SECONDS
        if stamp == self._refused:
            return
        self._refused, self._refusal = stamp, reason
        log.warning("the bridge's TLS files changed but do not load (%s): the bridge goes on with the ones loaded "
                    "before, and tries the files again at a connection after %.0f s", reason, RETRY_SECONDS)

    def _device_certificate(self) -> Certificate | None:
        if not self.bridge.cert_file:
            return None
        try:
            certificates = read_certificates(self.bridge.cert_file)
        except (OSError, ValueError):
            return None
        return certificates[0] if certificates else None

    def _read_stamp(self) -> _Stamp:
        return tuple(_listing_digest(path) if os.path.isdir(path) else _file_digest(path) for path in self.paths)


def _said(certificate: Certificate | None, now: datetime | None = None) -> str:
    if certificate is None:
        return ""
    return f" (this device's certificate: {describe(certificate, now or datetime.now(timezone.utc))})"


def _file_digest(path: str) -> str | None:
    try:
        with open(path, "rb") as file:
            return hashlib.sha256(file.read()).hexdigest()
    except OSError:
        return None


def _listing_digest(folder: str) -> str | None:
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        return None
    listing: list[tuple[str, tuple[int, ...] | None]] = []
    for name in names:
        try:  # the link itself (c_rehash makes links): one that dangles is still an entry
            status = os.lstat(os.path.join(folder, name))
        except OSError:
            listing.append((name, None))
            continue
        listing.append((name, (status.st_size, status.st_ino, status.st_mtime_ns, status.st_ctime_ns)))
    return hashlib.sha256(repr(listing).encode()).hexdigest()
