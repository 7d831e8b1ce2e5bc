"""The EdgeBroker on a full disk: an eMMC filled by logs or another component must not keep the broker from
starting again (Greengrass restarts it on every configuration change, and gives up after three failures)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from facecap.broker.credentials import write_credentials, write_private
from facecap.mqtt import MqttClient

from .support.edgebroker import EdgeBroker
from .support.filesystems import SmallFilesystem

pytestmark = pytest.mark.integration


def test_a_restart_on_a_full_disk_keeps_every_file_and_a_changed_conf_still_fits(
        small_filesystem: Callable[[int], SmallFilesystem], tmp_path: Path) -> None:
    disk = small_filesystem(16 * 1024 * 1024)
    edge = EdgeBroker(disk.path / "work", run_dir=disk.path / "local")
    edge.log_path = tmp_path / "broker.log"  # Greengrass keeps the component's output elsewhere
    edge.start()
    edge.stop()
    before = {path.name: path.read_bytes() for path in (disk.path / "local").iterdir() if path.is_file()}
    disk.fill()
    # A new setting changes mosquitto.conf, which must be written with no free byte on the disk.
    edge.config["persistence"] = {"autosaveAfterChanges": 50}
    edge.start()
    try:
        client = MqttClient(edge.settings("detector"), "detector")
        client.start()
        published = client.publish(f"faces/{edge.device_id}/cam0", b"x")
        assert published is not None
        published.result(10)
        client.stop()
    finally:
        edge.stop()
    after = {path.name: path.read_bytes() for path in (disk.path / "local").iterdir() if path.is_file()}
    # The passwords and the password file (its hashes still match) and the ACL were left as they were.
    assert {name: data for name, data in after.items() if name in before} == before
    assert "autosave_interval 50" in (disk.path / "work" / "mosquitto.conf").read_text()


def test_the_password_file_is_rewritten_only_when_a_password_changes(tmp_path: Path) -> None:
    passwd, _ = write_credentials(tmp_path, "jetson-1", "faces")
    first = passwd.read_text()
    write_credentials(tmp_path, "jetson-1", "faces")
    assert passwd.read_text() == first
    (tmp_path / "logger.password").unlink()  # a deleted password is made anew, and only its entry changes
    write_credentials(tmp_path, "jetson-1", "faces")
    changed = [old != new for old, new in zip(first.splitlines(), passwd.read_text().splitlines(), strict=True)]
    assert changed == [user == "logger" for user in ("detector", "sender", "logger", "monitor")]


def test_a_file_that_cannot_be_written_is_named(tmp_path: Path) -> None:
    folder = tmp_path / "gone"
    with pytest.raises(OSError, match=str(folder / "acl")):
        write_private(folder / "acl", "x")
