"""The EdgeBroker's run folder as the other components see it: the name of its Unix socket, where each
local identity's password lies, and the environment variable that points the components at the folder.

It is the meeting point of the broker (which writes the folder) and the MQTT client (which reads it), kept
at the bottom layer so that the broker does not load the MQTT client (and awscrt) only for these names.
"""

from __future__ import annotations

import socket
from pathlib import Path

EDGE_DIR_ENV = "FACECAP_EDGE_BROKER_DIR"
SOCKET_NAME = "mosquitto.sock"  # in the EdgeBroker's run folder, beside one password file per identity


def password_path(run_dir: Path, identity: str) -> Path:
    """Where the EdgeBroker keeps an identity's password (its first line)."""
    return run_dir / f"{identity}.password"


def socket_listening(path: Path) -> bool:
    """True when a broker accepts connections on the socket (a killed broker leaves a dead socket file)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.5)
        try:
            probe.connect(str(path))
        except OSError:
            return False
        return True
