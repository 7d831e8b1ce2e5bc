"""When the bridge's certificates run out, and a warning well before.

A fleet enrolled in one week has device certificates that all expire in one week (825 days later with
cloud/scripts), and on that day every bridge is refused at once. Nothing fails before then, so the only
way to see it coming is to read the dates: this module reads them from the PEM files the bridge uses, and
from the certificate the cloud broker shows the forwarder at each handshake.

The files are parsed here (a few DER fields: the validity and the subject's common name) rather than with
a crypto library, because the device installs no such library and `ssl` reads certificates only from a
live connection.
"""

from __future__ import annotations

import base64
import logging
import math
import re
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .config import BridgeSettings

log = logging.getLogger(__name__)

DAY_SECONDS = 86400
ROTATE_HINT = 'cloud/README.md, "Rotate a certificate"'
_PEM_CERTIFICATE = re.compile(rb"-----BEGIN CERTIFICATE-----(.+?)-----END CERTIFICATE-----", re.DOTALL)
_COMMON_NAME_OID = bytes.fromhex("550403")  # 2.5.4.3
_SEQUENCE, _SET, _UTC_TIME, _GENERALIZED_TIME, _VERSION = 0x30, 0x31, 0x17, 0x18, 0xA0
# BMPString, UniversalString and T61String; UTF8String, PrintableString and IA5String read as UTF-8.
_STRING_ENCODINGS = {0x1E: "utf-16-be", 0x1C: "utf-32-be", 0x14: "latin-1"}


@dataclass(frozen=True)
class Certificate:
    common_name: str  # empty when the subject has none
    not_after: datetime  # aware, UTC

    def days_left(self, now: datetime) -> float:
        return (self.not_after - now).total_seconds() / DAY_SECONDS


def read_certificates(path: str | Path) -> list[Certificate]:
    """Every certificate in a PEM file, in order (a CA file may hold several). ValueError when a block is
    not a certificate this module can read; OSError when the file cannot be read."""
    blocks = _PEM_CERTIFICATE.findall(Path(path).read_bytes())
    return [parse_der(base64.b64decode(b"".join(block.split()))) for block in blocks]


def parse_der(der: bytes) -> Certificate:
    """The subject's common name and notAfter of one DER X.509 certificate."""
    try:
        certificate = _children(der, *_bounds(_element(der, 0), _SEQUENCE))
        tbs = _children(der, *_bounds(certificate[0], _SEQUENCE))
        if tbs and tbs[0][0] == _VERSION:
            tbs = tbs[1:]
        # serialNumber, signature, issuer, validity, subject
        validity = _children(der, *_bounds(tbs[3], _SEQUENCE))
        tag, start, end = validity[1]
        return Certificate(_common_name(der, tbs[4]), _time(tag, der[start:end]))
    except (IndexError, ValueError) as exc:
        raise ValueError(f"not an X.509 certificate ({exc or 'truncated'})") from None


def from_peer(peer: Mapping[str, object]) -> Certificate | None:
    """The certificate `SSLObject.getpeercert()` returned (None when it is empty: no verification)."""
    not_after, subject = peer.get("notAfter"), peer.get("subject")
    if not isinstance(not_after, str):
        return None
    # subject: ((("commonName", "broker"),), (("organizationName", "x"),)), one tuple per relative name
    names = [pair[1] for rdn in subject for pair in rdn if pair[0] == "commonName"] \
        if isinstance(subject, tuple) else []
    return Certificate(str(names[0]) if names else "",
                       datetime.fromtimestamp(ssl.cert_time_to_seconds(not_after), timezone.utc))


_Element = tuple[int, int, int]  # tag, start and end of the contents


def _bounds(element: _Element, tag: int) -> tuple[int, int]:
    found, start, end = element
    if found != tag:
        raise ValueError(f"tag {found:#04x} where {tag:#04x} was expected")
    return start, end


def _element(der: bytes, at: int) -> _Element:
    tag, length = der[at], der[at + 1]
    start = at + 2
    if length & 0x80:
        size = length & 0x7F
        length, start = int.from_bytes(der[start:start + size], "big"), start + size
    if start + length > len(der):
        raise ValueError("an element runs past the end")
    return tag, start, start + length


def _children(der: bytes, start: int, end: int) -> list[_Element]:
    children = []
    while start < end:
        child = _element(der, start)
        children.append(child)
        start = child[2]
    return children


def _common_name(der: bytes, subject: _Element) -> str:
    for relative_name in _children(der, *_bounds(subject, _SEQUENCE)):
        for attribute in _children(der, *_bounds(relative_name, _SET)):
            oid, value = _children(der, *_bounds(attribute, _SEQUENCE))[:2]
            if der[oid[1]:oid[2]] == _COMMON_NAME_OID:
                return der[value[1]:value[2]].decode(_STRING_ENCODINGS.get(value[0], "utf-8"), errors="replace")
    return ""


def _time(tag: int, text: bytes) -> datetime:
    if tag == _UTC_TIME:  # YYMMDDHHMMSSZ; RFC 5280: 50-99 are 19xx
        year = int(text[:2])
        text = str(year + (1900 if year >= 50 else 2000)).encode() + text[2:]
    elif tag != _GENERALIZED_TIME:
        raise ValueError(f"tag {tag:#04x} is not a time")
    return datetime.strptime(text.decode("ascii"), "%Y%m%d%H%M%SZ").replace(tzinfo=timezone.utc)


def notice(what: str, certificate: Certificate, consequence: str, now: datetime,
           warning_days: int) -> tuple[int, str] | None:
    """(log level, line) for a certificate that has expired or expires within warning_days; None otherwise.
    what names it ("bridge.certFile: this device's certificate"); consequence says what its end means."""
    left = certificate.days_left(now)
    if left >= warning_days:
        return None
    if left <= 0:
        return logging.ERROR, f"{what} ({describe(certificate, now)}): {consequence} until it is replaced " \
                              f"({ROTATE_HINT})"
    return logging.WARNING, f"{what} ({describe(certificate, now)}): {consequence} from then; replace it " \
                            f"before ({ROTATE_HINT})"


def describe(certificate: Certificate, now: datetime) -> str:
    """'CN=jetson-01, expires on 2026-12-09 09:15 UTC, in 12 days' (or 'expired on ...')."""
    name = f"CN={certificate.common_name}, " if certificate.common_name else ""
    date = certificate.not_after.strftime("%Y-%m-%d %H:%M UTC")
    left = certificate.days_left(now)
    if left <= 0:
        return f"{name}expired on {date}"
    days = math.ceil(left)  # a certificate issued for 12 days is "in 12 days" on its first day
    return f"{name}expires on {date}, " + ("in less than a day" if left < 1 else
                                           f"in {days} day{'' if days == 1 else 's'}")


def identity_mismatch(bridge: BridgeSettings, device_id: str) -> str | None:
    """Why facecap's cloud broker would refuse every face of this device, when the bridge's certificate
    names another device; None when it names this one, or names none, or cannot be read (preflight says so),
    or there is no TLS bridge with a certificate, or no device id to compare.
    facecap's cloud broker takes a device's id from its certificate's CN, and its ACL lets a device write
    only under that id: a certificate of another device (a typo in add-device.sh, files copied from the
    wrong folder) makes the bridge come up and every face be refused behind it."""
    cert_file = bridge.cert_file
    if not (device_id and bridge.enabled and bridge.tls and cert_file):
        return None
    try:
        certificates = read_certificates(cert_file)
    except (OSError, ValueError):
        return None
    name = certificates[0].common_name if certificates else ""
    if not name or name == device_id:
        return None
    return (f"this device's certificate {cert_file} is for CN={name}, but its device id is {device_id} (deviceId, "
            "by default the Greengrass thing name). facecap's cloud broker takes a device's id from its "
            "certificate and refuses faces under any other id, so with it none would be stored: issue the "
            f"certificate for {device_id} (cloud/scripts/add-device.sh {device_id}) or set deviceId to {name}. "
            "(A broker that takes the id from elsewhere does not mind.)")


@dataclass(frozen=True)
class WatchedFile:
    key: str  # the configuration key that names the file
    path: str
    what: str  # of the file's first certificate
    what_next: str  # of any after it (a certFile's chain, a caFile's further CAs)
    consequence: str
    trust_list: bool  # a file of CAs, any one of which may be the one that matters


def bridge_files(cert_file: str, ca_file: str) -> list[WatchedFile]:
    files = []
    if cert_file:
        files.append(WatchedFile("bridge.certFile", cert_file, "this device's certificate",
                                 "a certificate in the chain of this device's certificate",
                                 "the cloud broker refuses the bridge", trust_list=False))
    if ca_file:
        files.append(WatchedFile("bridge.caFile", ca_file, "a CA certificate", "a CA certificate",
                                 "the bridge no longer trusts a cloud broker certificate it signed",
                                 trust_list=True))
    return files


def check_files(files: list[WatchedFile], warning_days: int, now: datetime | None = None) -> list[tuple[int, str]]:
    """Log (and return) a notice for each certificate in the files that has expired or expires within
    warning_days. A file that cannot be read is a debug line: preflight has already checked it loads."""
    now = now or datetime.now(timezone.utc)
    notices = []
    for watched in files:
        try:
            certificates = read_certificates(watched.path)
        except (OSError, ValueError) as exc:
            log.debug("cannot read the dates of %s (%s): %s", watched.key, watched.path, exc)
            continue
        for index in range(len(certificates)):
            found = _file_notice(watched, index, certificates, now, warning_days)
            if found is not None:
                log.log(*found)
                notices.append(found)
    return notices


def _file_notice(watched: WatchedFile, index: int, certificates: list[Certificate], now: datetime,
                 warning_days: int) -> tuple[int, str] | None:
    certificate = certificates[index]
    what = f"{watched.key} {watched.path}: {watched.what_next if index else watched.what}"
    if watched.trust_list and any(other.days_left(now) >= warning_days
                                  for at, other in enumerate(certificates) if at != index):
        # A CA file that also holds a CA which lasts: the old CA kept after a rotation, or an expired root in
        # a system bundle. Which CA signs the cloud broker's certificate cannot be told from here (the cloud
        # side's check-certs.sh can), so this is said, but not as a warning every day on every device.
        if certificate.days_left(now) >= warning_days:
            return None
        return logging.INFO, f"{what} ({describe(certificate, now)}): the file holds other CAs that last; once " \
                             f"the cloud broker's certificate is not signed by this one, it can go ({ROTATE_HINT})"
    return notice(what, certificate, watched.consequence, now, warning_days)


class CertificateWatch:
    """Checks the bridge's certificate files at start and then every `interval` seconds (a day), so a device
    that runs for months warns in its log from `warning_days` before the date on. The files are read afresh
    each time. `also` runs after each check: facecap's forwarder has the files it loaded looked at there
    (tlsfiles.BridgeTlsFiles.daily_check), since a copy that did not load leaves it on an older certificate
    than the one on disk."""

    def __init__(self, files: list[WatchedFile], warning_days: int, interval: float = DAY_SECONDS,
                 also: Callable[[], None] | None = None) -> None:
        self.files = files
        self.warning_days = warning_days
        self.interval = interval
        self.also = also
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="certificate-watch", daemon=True)

    def start(self) -> CertificateWatch:
        if self.files and (self.warning_days > 0 or self.also is not None):
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)

    def _run(self) -> None:
        while True:
            if self.warning_days > 0:
                check_files(self.files, self.warning_days)
            if self.also is not None:
                try:
                    self.also()
                except Exception:  # a bug: the watch must go on, or no later day warns
                    log.exception("the daily check of the bridge's TLS files failed")
            if self._stop.wait(self.interval):
                return


class PeerCertificateReminder:
    """The cloud broker's certificate, seen by the forwarder at every handshake: a notice at most once per
    `interval`, so a bridge that reconnects often does not repeat it."""

    def __init__(self, target: str, warning_days: int, interval: float = DAY_SECONDS) -> None:
        self.target = target
        self.warning_days = warning_days
        self.interval = interval
        self._noticed_at: float | None = None

    def seen(self, peer: Mapping[str, object] | None, now: datetime | None = None) -> tuple[int, str] | None:
        if self.warning_days <= 0 or not peer:
            return None
        monotonic = time.monotonic()
        if self._noticed_at is not None and monotonic - self._noticed_at < self.interval:
            return None
        certificate = from_peer(peer)
        if certificate is None:
            return None
        found = notice(f"bridge TLS to {self.target}: the cloud broker's certificate", certificate,
                       "the bridge no longer trusts the cloud broker", now or datetime.now(timezone.utc),
                       self.warning_days)
        if found is not None:
            self._noticed_at = monotonic
            log.log(*found)
        return found
