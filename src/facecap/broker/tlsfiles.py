"""The bridge's TLS files, loaded again when they change, so a rotated certificate needs no restart.

A certificate is rotated by copying new files over the old ones (cloud/README.md, "Rotate a certificate"),
on one device or, for a CA, on every device of a fleet. facecap's TLS forwarder makes a new connection to
the cloud whenever Mosquitto's bridge connects, so it reads the files then (a few KB): when the content of
any of them changed (a copy over it or a rename onto it), it loads them again, and that connection and the
later ones use them. A connection already open keeps the certificate it was made with: the cloud broker
checks a certificate only at the handshake, so cutting a working link would gain nothing.

Files caught half-copied (the new certificate beside the old key) do not load: the forwarder goes on with
what it loaded before and tries again at the next connection, when the copy is done.
"""

from __future__ import annotations

import hashlib
import logging
import os
import ssl
from datetime import datetime, timezone

from ..errors import ConfigError
from .certlife import bridge_files, check_files, describe, read_certificates
from .config import BridgeSettings
from .tlsforward import bridge_tls_context

log = logging.getLogger(__name__)

# Per path, a digest of the file's content, or of a folder's listing; None: missing or unreadable.
_Stamp = tuple[str | None, ...]


class BridgeTlsFiles:
    """The bridge's client TLS context (bridge_tls_context), made again from its files when they change.

    The first load raises ConfigError naming the key, so a file that does not load stops the start."""

    def __init__(self, bridge: BridgeSettings, warning_days: int = 0) -> None:
        self.bridge = bridge
        self.warning_days = warning_days
        # caPath is a folder of CAs and their c_rehash links: a CA added or removed there changes its listing.
        self.paths = [path for path in (bridge.ca_file or bridge.ca_path, bridge.cert_file, bridge.key_file)
                      if path]
        self._stamp = self._read_stamp()  # before loading: a change during the load is seen next time
        self._context = bridge_tls_context(bridge)
        self._refused: _Stamp | None = None

    def context(self) -> ssl.SSLContext:
        """The context for a new connection: the one loaded before, unless the files have changed since and
        now load."""
        stamp = self._read_stamp()
        if stamp in (self._stamp, self._refused):
            return self._context
        try:
            context = bridge_tls_context(self.bridge)
        except ConfigError as exc:
            self._refused = stamp  # said once per content, not at every reconnect
            log.warning("the bridge's TLS files changed but do not load (%s): the bridge goes on with the ones "
                        "loaded before, and tries the files again at its next connection",
                        "; ".join(f"{key}: {reason}" for key, reason in exc.problems))
            return self._context
        changed = [path for path, before, now in zip(self.paths, self._stamp, stamp, strict=True) if before != now]
        self._context, self._stamp, self._refused = context, stamp, None
        log.info("the bridge's TLS files changed (%s): loaded again; connections to the cloud from now on use "
                 "them%s", ", ".join(changed), self._certificate_said())
        check_files(bridge_files(self.bridge.cert_file, self.bridge.ca_file), self.warning_days)
        return context

    def _certificate_said(self) -> str:
        if not self.bridge.cert_file:
            return ""
        try:
            certificates = read_certificates(self.bridge.cert_file)
        except (OSError, ValueError):
            return ""
        return f" (this device's certificate: {describe(certificates[0], datetime.now(timezone.utc))})" \
            if certificates else ""

    def _read_stamp(self) -> _Stamp:
        return tuple(_listing_digest(path) if os.path.isdir(path) else _file_digest(path) for path in self.paths)


def _file_digest(path: str) -> str | None:
    try:
        with open(path, "rb") as file:
            return hashlib.sha256(file.read()).hexdigest()
    except OSError:
        return None


def _listing_digest(folder: str) -> str | None:
    try:
        names = sorted(os.listdir(folder))
        listing = [(name, os.stat(os.path.join(folder, name)).st_mtime_ns) for name in names]
    except OSError:
        return None
    return hashlib.sha256(repr(listing).encode()).hexdigest()
