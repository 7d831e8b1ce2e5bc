"""What the security tests share: the shipped cloud broker (one per test module), and the real processor
against it, storing into a file store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from facecap.config import load_config
from facecap.processor.config import ProcessorConfig

from ..support.cloudbroker import CloudBroker, cloud_broker_running

DEVICES = ("device-a", "device-b", "device-gone")


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CloudBroker]:
    """The shipped configuration with three devices added by add-device.sh; shared by a module's tests."""
    with cloud_broker_running(tmp_path_factory.mktemp("cloud"), DEVICES) as broker:
        yield broker


def processor_config(cloud: CloudBroker, folder: Path, client_id: str, **overrides: Any) -> ProcessorConfig:
    """The processor as compose runs it (processor listener, its password file), storing into folder."""
    secrets = cloud.secrets / "processor"
    data: dict[str, Any] = {
        "mqtt": {"host": "127.0.0.1", "port": cloud.processor_port, "tls": True,
                 "caFile": str(secrets / "ca.crt"), "username": "processor",
                 "passwordFile": str(secrets / "password"), "clientId": client_id,
                 "minReconnectDelaySeconds": 0.2, "maxReconnectDelaySeconds": 1.0, "connectTimeoutSeconds": 5},
        "store": f"file://{folder}",
        "retry": {"initialDelaySeconds": 0.2, "maxDelaySeconds": 2.0},
        "heartbeatFile": str(folder.parent / f"{client_id}.heartbeat"),
        "drainTimeoutSeconds": 10,
        **overrides,
    }
    return load_config(ProcessorConfig, "processor", data, env={})


def stored_files(root: Path) -> list[Path]:
    """Every object in a file store (sidecars left out)."""
    if not root.exists():
        return []
    return sorted(p for p in root.rglob("*") if p.is_file() and not p.name.endswith(".json"))
