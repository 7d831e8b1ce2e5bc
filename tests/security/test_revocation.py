"""A removed device: remove-device.sh revokes its certificate into the broker's CRL, and a reload (SIGHUP)
makes the broker refuse it without dropping anyone else. Adding and rotating keep working."""

from __future__ import annotations

import pytest

from facecap.errors import MqttConnectError

from ..support.cloudbroker import CloudBroker, connect, publish, run_script
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
