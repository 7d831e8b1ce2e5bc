"""The bridge's certificate lifetimes: dates read from PEM files made by openssl and checked against what
openssl itself prints, the notices a device logs before and after the date, and the daily watch."""

from __future__ import annotations

import logging
import ssl
import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from facecap.broker.certlife import (
    CertificateWatch,
    PeerCertificateReminder,
    bridge_files,
    check_files,
    notice,
    read_certificates,
)
from facecap.devkit.servers import CertificateAuthority
from facecap.polling import wait_until

pytestmark = pytest.mark.unit

LOG_NAME = "facecap.broker.certlife"


def openssl_not_after(path: Path) -> datetime:
    """notAfter as openssl prints it: the reference the parser is held to."""
    line = subprocess.run(["openssl", "x509", "-in", str(path), "-noout", "-enddate"], capture_output=True,
                          text=True, check=True).stdout.strip()
    return datetime.fromtimestamp(ssl.cert_time_to_seconds(line.removeprefix("notAfter=")), timezone.utc)


def self_signed(folder: Path, name: str, days: int, *key: str) -> Path:
    cert = folder / f"{name}.crt"
    subprocess.run(["openssl", "req", "-x509", *(key or ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256")),
                    "-nodes", "-keyout", str(folder / f"{name}.key"),
                    "-out", str(cert), "-days", str(days), "-subj", f"/O=facecap tests/CN={name}"],
                   capture_output=True, check=True)
    return cert


def test_dates_and_names_match_openssl_for_every_certificate_in_a_file(ca: CertificateAuthority,
                                                                       tmp_path: Path) -> None:
    device = ca.issue("jetson-7", days=12).cert
    # Beyond 2049 a certificate's date is a GeneralizedTime, not a UTCTime; an RSA key makes other lengths.
    far = self_signed(tmp_path, "far-future", 20000, "-newkey", "rsa:2048")
    bundle = tmp_path / "bundle.pem"
    bundle.write_text("a comment before the first block\n" + device.read_text() + far.read_text())
    read = read_certificates(bundle)
    assert [c.common_name for c in read] == ["jetson-7", "far-future"]
    assert [c.not_after for c in read] == [openssl_not_after(device), openssl_not_after(far)]
    assert read[1].not_after.year > 2050


def test_a_file_without_a_readable_certificate(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    empty, broken = tmp_path / "empty.pem", tmp_path / "broken.pem"
    empty.write_text("no certificate here\n")
    broken.write_text("-----BEGIN CERTIFICATE-----\nMIIBAAAA\n-----END CERTIFICATE-----\n")
    assert read_certificates(empty) == []
    with pytest.raises(ValueError, match=r"not an X\.509 certificate"):
        read_certificates(broken)
    caplog.set_level(logging.DEBUG, LOG_NAME)
    # Preflight has already loaded the files; one that changed since is no reason to stop the broker.
    assert check_files(bridge_files(str(broken), str(tmp_path / "gone.pem")), 30) == []
    assert [r.levelno for r in caplog.records] == [logging.DEBUG, logging.DEBUG]


def test_notices_start_warning_days_before_the_date_and_turn_to_errors_after(ca: CertificateAuthority) -> None:
    certificate = read_certificates(ca.issue("jetson-7", days=12).cert)[0]
    issued = datetime.now(timezone.utc)
    what, consequence = "bridge.certFile f: this device's certificate", "the cloud broker refuses the bridge"
    assert notice(what, certificate, consequence, issued, warning_days=10) is None
    level, line = notice(what, certificate, consequence, issued, warning_days=30) or (0, "")
    date = certificate.not_after.strftime("%Y-%m-%d %H:%M UTC")
    assert level == logging.WARNING
    assert line.startswith(f"{what} (CN=jetson-7, expires on {date}, in 12 days): {consequence} from then")
    assert "Rotate a certificate" in line
    level, line = notice(what, certificate, consequence, certificate.not_after - timedelta(hours=2), 30) or (0, "")
    assert "in less than a day" in line
    level, line = notice(what, certificate, consequence, certificate.not_after + timedelta(seconds=1), 30) or (0, "")
    assert level == logging.ERROR
    assert f"(CN=jetson-7, expired on {date}): {consequence} until it is replaced" in line


def test_each_file_is_checked_and_each_certificate_named(ca: CertificateAuthority, tmp_path: Path,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, LOG_NAME)
    expired, soon = ca.issue("jetson-7", days=-1).cert, ca.issue("intermediate", days=5).cert
    chain = tmp_path / "chain.pem"
    chain.write_text(expired.read_text() + soon.read_text())
    ending_ca = self_signed(tmp_path, "ending-ca", 20)
    notices = check_files(bridge_files(str(chain), str(ending_ca)), warning_days=30)
    assert [level for level, _ in notices] == [logging.ERROR, logging.WARNING, logging.WARNING]
    assert notices[0][1].startswith(f"bridge.certFile {chain}: this device's certificate (CN=jetson-7, expired")
    assert notices[1][1].startswith(f"bridge.certFile {chain}: a certificate in the chain of this device's "
                                    "certificate (CN=intermediate, expires")
    assert notices[2][1].startswith(f"bridge.caFile {ending_ca}: a CA certificate (CN=ending-ca, expires")
    assert "in 20 days): the bridge no longer trusts a cloud broker certificate it signed" in notices[2][1]
    assert [r.getMessage() for r in caplog.records] == [line for _, line in notices]


def test_a_ca_file_that_also_holds_a_lasting_ca_is_no_daily_warning(ca: CertificateAuthority,
                                                                       tmp_path: Path) -> None:
    """After a CA rotation the devices' ca.crt may keep the old CA beside the new one (cloud/README.md), and a
    system bundle holds expired roots: which CA signs the cloud's certificate cannot be told from the file,
    so an ending CA beside one that lasts is said at INFO, not warned about every day on every device."""
    old_ca, ending = ca.issue("old-ca", days=-1).cert, self_signed(tmp_path, "ending-ca", 20)
    both = tmp_path / "both.pem"
    both.write_text(old_ca.read_text() + ending.read_text() + ca.cert.read_text())
    notices = check_files(bridge_files("", str(both)), warning_days=30)
    assert [level for level, _ in notices] == [logging.INFO, logging.INFO]
    assert notices[0][1].startswith(f"bridge.caFile {both}: a CA certificate (CN=old-ca, expired on ")
    assert notices[1][1].startswith(f"bridge.caFile {both}: a CA certificate (CN=ending-ca, expires on ")
    assert "in 20 days): the file holds other CAs that last; once the cloud broker's certificate" in notices[1][1]
    # Without the lasting one, the file as a whole is ending: a warning and an error again.
    both.write_text(old_ca.read_text() + ending.read_text())
    assert [level for level, _ in check_files(bridge_files("", str(both)), 30)] == [logging.ERROR, logging.WARNING]


def test_common_names_in_other_string_types_read_as_openssl_reads_them(tmp_path: Path) -> None:
    config = tmp_path / "bmp.cnf"
    # string_mask MASK:0x800 makes openssl write the name as a BMPString (UTF-16).
    config.write_text("[req]\ndistinguished_name=dn\nstring_mask=MASK:0x800\nprompt=no\n[dn]\nCN=caméra-7\n")
    cert = tmp_path / "bmp.crt"
    subprocess.run(["openssl", "req", "-x509", "-config", str(config), "-utf8", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-keyout", str(tmp_path / "bmp.key"), "-out", str(cert),
                    "-days", "10"], capture_output=True, check=True)
    dump = subprocess.run(["openssl", "asn1parse", "-in", str(cert)], capture_output=True, text=True,
                          check=True).stdout
    assert "BMPSTRING" in dump
    assert read_certificates(cert)[0].common_name == "caméra-7"


def test_the_watch_checks_again_after_each_interval_until_stopped(ca: CertificateAuthority,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, LOG_NAME)
    device = ca.issue("jetson-7", days=3).cert

    def notices() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.name == LOG_NAME]

    watch = CertificateWatch(bridge_files(str(device), ""), warning_days=30, interval=0.1).start()
    try:
        assert wait_until(lambda: len(notices()) >= 3, 10, 0.02)
    finally:
        watch.stop()
    count = len(notices())
    assert wait_until(lambda: len(notices()) > count, 0.5, 0.05) is False
    assert all("this device's certificate (CN=jetson-7" in line for line in notices())
    silent = CertificateWatch(bridge_files(str(device), ""), warning_days=0, interval=0.1).start()
    silent.stop()
    assert len(notices()) == count


def test_the_watch_runs_its_extra_check_daily_even_without_date_warnings_and_outlives_its_failure(
        ca: CertificateAuthority, caplog: pytest.LogCaptureFixture) -> None:
    """The forwarder's files (tlsfiles.BridgeTlsFiles.daily_check) are looked at by the same thread: a copy
    that did not load is said again each day, also with certificateWarningDays 0."""
    calls: list[int] = []

    def also() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("a bug in the extra check")

    watch = CertificateWatch(bridge_files(str(ca.issue("jetson-8").cert), ""), warning_days=0, interval=0.05,
                             also=also).start()
    try:
        assert wait_until(lambda: len(calls) >= 3, 10, 0.02)
    finally:
        watch.stop()
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR] == [
        "the daily check of the bridge's TLS files failed"]


def test_the_cloud_brokers_certificate_is_noticed_once_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, LOG_NAME)
    peer = {"subject": ((("organizationName", "facecap"),), (("commonName", "broker.example.com"),)),
            "notAfter": "Dec 20 12:00:00 2026 GMT"}
    now = datetime(2026, 12, 1, 12, tzinfo=timezone.utc)
    reminder = PeerCertificateReminder("cloud:8883", warning_days=30, interval=3600)
    level, line = reminder.seen(peer, now) or (0, "")
    assert level == logging.WARNING
    assert line.startswith("bridge TLS to cloud:8883: the cloud broker's certificate (CN=broker.example.com, "
                           "expires on 2026-12-20 12:00 UTC, in 19 days)")
    assert reminder.seen(peer, now) is None  # the next handshake, within the hour
    assert PeerCertificateReminder("cloud:8883", warning_days=0).seen(peer, now) is None
    assert PeerCertificateReminder("cloud:8883", warning_days=30).seen({}, now) is None  # not verified
    assert len(caplog.records) == 1
