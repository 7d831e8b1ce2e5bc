"""The bridge's TLS files loaded again when they change (broker/tlsfiles.py), on real certificates made by
openssl: what a refused copy leaves in use, what the daily check says about it, and folders of CAs. The
forwarder using it against a real TLS server is in test_broker_tlsforward.py, and a real `facecap broker`
in test_broker_bridge.py."""

from __future__ import annotations

import logging
import os
import shutil
import ssl
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from facecap.broker import tlsfiles
from facecap.broker.config import BridgeSettings
from facecap.broker.tlsfiles import BridgeTlsFiles
from facecap.broker.tlsforward import bridge_tls_context
from facecap.devkit.servers import Certificate, CertificateAuthority
from facecap.errors import ConfigError

pytestmark = pytest.mark.unit

LOG_NAME = "facecap.broker.tlsfiles"


def said(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOG_NAME and r.levelno == level]


def copy_pair(pair: Certificate, cert: Path, key: Path) -> None:
    shutil.copyfile(pair.cert, cert)
    shutil.copyfile(pair.key, key)


def device_files(ca: CertificateAuthority, folder: Path, first: Certificate,
                 warning_days: int = 0) -> tuple[BridgeTlsFiles, Path, Path]:
    cert, key = folder / "client.crt", folder / "client.key"
    copy_pair(first, cert, key)
    bridge = BridgeSettings(host="cloud", ca_file=str(ca.cert), cert_file=str(cert), key_file=str(key))
    return BridgeTlsFiles(bridge, warning_days), cert, key


def test_a_copy_refused_once_is_loaded_when_tried_again(ca: CertificateAuthority, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    """Files read while a copy of the same content was still being written do not load, though the content,
    once written, is good: the refusal must not stick to that content for good."""
    caplog.set_level(logging.INFO, LOG_NAME)
    monkeypatch.setattr(tlsfiles, "RETRY_SECONDS", 0.0)
    files, cert, key = device_files(ca, tmp_path, ca.issue("device-one"))
    before = files.context()
    copy_pair(ca.issue("device-two"), cert, key)
    real_load = bridge_tls_context

    def caught_mid_copy(bridge: BridgeSettings) -> ssl.SSLContext:
        raise ConfigError("broker", [("bridge.keyFile", "cannot load: PEM lib (the copy was half written)")])

    monkeypatch.setattr(tlsfiles, "bridge_tls_context", caught_mid_copy)
    assert files.context() is before
    assert len(said(caplog, logging.WARNING)) == 1
    monkeypatch.setattr(tlsfiles, "bridge_tls_context", real_load)
    assert files.context() is not before  # the same content, tried again, loads
    assert said(caplog, logging.INFO)[0].startswith(f"the bridge's TLS files changed ({cert}, {key}): loaded again")


def test_anything_a_load_raises_keeps_the_context_in_use(ca: CertificateAuthority, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    files, cert, key = device_files(ca, tmp_path, ca.issue("device-one"))
    before = files.context()
    copy_pair(ca.issue("device-two"), cert, key)

    def broken(bridge: BridgeSettings) -> ssl.SSLContext:
        raise ValueError("something no one foresaw")

    monkeypatch.setattr(tlsfiles, "bridge_tls_context", broken)
    assert files.context() is before
    assert said(caplog, logging.WARNING) == [
        "the bridge's TLS files changed but do not load (ValueError: something no one foresaw): the bridge goes "
        "on with the ones loaded before, and tries the files again at a connection after 60 s"]


def test_the_daily_check_repeats_a_refusal_with_the_dates_of_the_certificate_in_use(
        ca: CertificateAuthority, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A renewed certificate copied with the wrong key: the files on disk are fine by their dates, so only
    the certificate the bridge goes on with can warn before it runs out."""
    caplog.set_level(logging.INFO)
    files, cert, key = device_files(ca, tmp_path, ca.issue("device-ending", days=10), warning_days=30)
    files.daily_check()
    assert said(caplog, logging.WARNING) == []  # nothing refused: the watch's own check covers the files
    renewed = ca.issue("device-renewed")
    shutil.copyfile(renewed.cert, cert)  # and not its key
    files.context()
    caplog.clear()
    now = datetime.now(timezone.utc)
    for _ in range(2):  # every day, not once
        files.daily_check(now)
        now += timedelta(days=1)
    reminders = [line for line in said(caplog, logging.WARNING) if "still do not load" in line]
    assert len(reminders) == 2
    assert reminders[0].startswith(f"the bridge's TLS files on disk still do not load (bridge.certFile: cannot load "
                                   f"{cert} with {key}: key values mismatch): the bridge goes on with the ones "
                                   "loaded before (this device's certificate: CN=device-ending, expires on ")
    notices = [line for line in said(caplog, logging.WARNING) if line.startswith("the certificate the bridge goes")]
    assert len(notices) == 2
    assert "CN=device-ending" in notices[0] and "in 10 days): the cloud broker refuses the bridge" in notices[0]

    shutil.copyfile(renewed.key, key)  # the copy finished: the daily check loads it
    caplog.clear()
    files.daily_check(now)
    assert said(caplog, logging.WARNING) == []
    assert "CN=device-renewed" in said(caplog, logging.INFO)[0]


def test_a_folder_of_cas_is_followed_by_its_entries_even_with_a_dangling_link(ca: CertificateAuthority,
                                                                           tmp_path: Path) -> None:
    folder = tmp_path / "cas"
    folder.mkdir()
    shutil.copyfile(ca.cert, folder / "one.pem")
    os.symlink("one.pem", folder / "abcd1234.0")  # a c_rehash link
    os.symlink("gone.pem", folder / "dangling.0")
    files = BridgeTlsFiles(BridgeSettings(host="cloud", ca_path=str(folder)))
    before = files.context()
    assert files.context() is before  # nothing changed
    other = CertificateAuthority(tmp_path / "other-ca", name="another-ca")
    shutil.copyfile(other.cert, folder / "two.pem")  # a CA added
    assert files.context() is not before


def test_a_certificate_of_another_device_copied_in_is_an_error(ca: CertificateAuthority, tmp_path: Path,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    cert, key = tmp_path / "client.crt", tmp_path / "client.key"
    copy_pair(ca.issue("jetson-1"), cert, key)
    files = BridgeTlsFiles(BridgeSettings(host="cloud", ca_file=str(ca.cert), cert_file=str(cert), key_file=str(key)),
                           device_id="jetson-1")
    files.context()
    copy_pair(ca.issue("jetson-2"), cert, key)  # the neighbour's folder
    files.context()
    assert said(caplog, logging.WARNING) == [
        f"bridge.certFile: this device's certificate {cert} is for CN=jetson-2, but its device id is jetson-1 "
        "(deviceId, by default the Greengrass thing name). facecap's cloud broker takes a device's id from its "
        "certificate and refuses faces under any other id, so with it none would be stored: issue the certificate "
        "for jetson-1 (cloud/scripts/add-device.sh jetson-1) or set deviceId to jetson-2. (A broker that takes the "
        "id from elsewhere does not mind.)"]
