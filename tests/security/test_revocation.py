"""A removed device: remove-device.sh revokes its certificate into the broker's CRL, and a reload (SIGHUP)
makes the broker refuse it without dropping anyone else. Adding and rotating keep working; every
certificate ever issued to a device is revoked, and a failed re-issue leaves the working pair alone."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from facecap.errors import MqttConnectError

from ..support.cloudbroker import CloudBroker, connect, publish, run_script, tls_refusal
from ..support.helpers import Collector, fake_jpeg

pytestmark = pytest.mark.integration


def test_removed_device_cannot_connect_and_the_others_stay_connected(cloud: CloudBroker) -> None:
    faces = Collector()
    processor = connect(cloud.processor_settings(), "processor", on_message=faces)
    processor.subscribe("faces/#")
    device_a = connect(cloud.device_settings("device-a"), "device-a")
    connect(cloud.device_settings("device-gone"), "device-gone").stop()

    run_script("remove-device.sh", "device-gone", secrets=cloud.secrets)
    cloud.reload()

    # Refused at the TLS handshake, whatever it claims to be.
    for overrides in ({}, {"username": "processor", "password_file": str(cloud.secrets / "processor/password")}):
        with pytest.raises(MqttConnectError):
            connect(cloud.device_settings("device-gone", **overrides), "device-gone")
    # The reload dropped nobody: the same connections still carry faces.
    publish(device_a, "faces/device-a/cam0", fake_jpeg(300))
    assert faces.wait_for(1)
    assert (device_a.stats.connects, processor.stats.connects) == (1, 1)
    device_a.stop()
    processor.stop()


def test_a_rotated_device_uses_its_new_certificate_and_the_old_one_can_be_revoked(cloud: CloudBroker) -> None:
    folder = cloud.device_files("device-b")
    run_script("add-device.sh", "--force", "device-b", secrets=cloud.secrets)
    previous = {"cert_file": str(folder / "client.crt.previous"), "key_file": str(folder / "client.key.previous")}
    connect(cloud.device_settings("device-b", **previous), "device-b-old").stop()  # valid until revoked
    run_script("revoke-cert.sh", str(folder / "client.crt.previous"), secrets=cloud.secrets)
    cloud.reload()
    with pytest.raises(MqttConnectError):
        connect(cloud.device_settings("device-b", **previous), "device-b-old")
    current = connect(cloud.device_settings("device-b"), "device-b")
    publish(current, "faces/device-b/cam0", fake_jpeg(300))
    current.stop()
    # A new device joins the running broker without a reload: the CA signs it, the CRL does not list it.
    run_script("add-device.sh", "device-new", secrets=cloud.secrets)
    connect(cloud.device_settings("device-new"), "device-new").stop()


def pair(folder: Path, suffix: str = "") -> dict[str, str]:
    """MqttSettings overrides for the certificate and key in folder (client.crt<suffix>, client.key<suffix>)."""
    return {"cert_file": str(folder / f"client.crt{suffix}"), "key_file": str(folder / f"client.key{suffix}")}


def keep_pair(folder: Path, copy: Path) -> dict[str, str]:
    """A copy of the device's current pair, as the Jetson holds it after it was handed out."""
    copy.mkdir()
    for name in ("client.crt", "client.key"):
        shutil.copy2(folder / name, copy / name)
    return pair(copy)


def rotate_twice_then_remove(cloud: CloudBroker, device: str, tmp_path: Path, *, before_record: bool) -> None:
    """Issue, rotate twice without revoking, remove: each of the three certificates works until
    remove-device.sh and is refused after the reload. before_record: the first certificate was issued before
    the CA kept its record of issued certificates (secrets/ca/issued/<id>/), so only the device folder had it."""
    folder = cloud.device_files(device)
    run_script("add-device.sh", device, secrets=cloud.secrets)
    if before_record:
        shutil.rmtree(cloud.secrets / "ca" / "issued" / device, ignore_errors=True)
    first = keep_pair(folder, tmp_path / "first")
    run_script("add-device.sh", "--force", device, secrets=cloud.secrets)
    run_script("add-device.sh", "--force", device, secrets=cloud.secrets)
    # The first pair's files in the device folder are gone: the second rotation overwrote *.previous.
    assert (folder / "client.crt.previous").read_bytes() != (tmp_path / "first" / "client.crt").read_bytes()
    generations = {"first": first, "second": pair(folder, ".previous"), "current": pair(folder)}
    for name, files in generations.items():
        assert tls_refusal(cloud.device_settings(device, **files)) is None, name  # all valid so far

    removed = run_script("remove-device.sh", device, secrets=cloud.secrets)
    cloud.reload()
    for name, files in generations.items():
        assert "certificate revoked" in (tls_refusal(cloud.device_settings(device, **files)) or "accepted"), name
    assert removed.stdout.count("revoked serial=") == 3, removed.stdout


def test_remove_device_revokes_every_certificate_of_a_device_rotated_twice(cloud: CloudBroker,
                                                                          tmp_path: Path) -> None:
    rotate_twice_then_remove(cloud, "device-rotated", tmp_path, before_record=False)


def test_a_certificate_issued_before_the_record_is_recorded_when_rotated_out(cloud: CloudBroker,
                                                                           tmp_path: Path) -> None:
    rotate_twice_then_remove(cloud, "device-older", tmp_path, before_record=True)


def test_a_failed_reissue_keeps_the_working_pair_says_why_and_remove_device_still_revokes(
        cloud: CloudBroker, tmp_path: Path) -> None:
    device = "device-failed-rotation"
    folder = cloud.device_files(device)
    run_script("add-device.sh", device, secrets=cloud.secrets)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    # A CA key that does not match the CA certificate (a wrong backup restored) makes openssl refuse to sign.
    ca_key = cloud.secrets / "ca" / "ca.key"
    saved = tmp_path / "ca.key"
    shutil.copy2(ca_key, saved)
    subprocess.run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-out", str(ca_key)], check=True, capture_output=True)
    try:
        failed = run_script("add-device.sh", "--force", device, secrets=cloud.secrets, check=False)
    finally:
        shutil.copy2(saved, ca_key)
    assert failed.returncode != 0
    assert "cannot sign a certificate for device-failed-rotation" in failed.stderr
    assert "CA certificate and CA private key do not match" in failed.stderr  # openssl's own reason
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before  # no *.previous, no temporary files
    connect(cloud.device_settings(device), device).stop()

    run_script("remove-device.sh", device, secrets=cloud.secrets)
    cloud.reload()
    assert "certificate revoked" in (tls_refusal(cloud.device_settings(device)) or "accepted")


def test_remove_device_refuses_an_id_that_never_had_a_certificate(cloud: CloudBroker) -> None:
    refused = run_script("remove-device.sh", "device-never-added", secrets=cloud.secrets, check=False)
    assert refused.returncode != 0
    assert "no certificate for device device-never-added" in refused.stderr
