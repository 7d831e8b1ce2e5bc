"""The durable outbox: a producer keeps each face on disk until the cloud's receipt says it is stored.

The names below load on first use (PEP 562), so reading an outbox (`facecap outbox`) or its settings does
not load the MQTT client behind OutboxPublisher.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .config import OutboxSettings
    from .publisher import OutboxPublisher
    from .store import Outbox, OutboxCounts, OutboxWriteError, PendingFace

_HOMES = {
    "OutboxSettings": "config",
    "OutboxPublisher": "publisher",
    "Outbox": "store",
    "OutboxCounts": "store",
    "OutboxWriteError": "store",
    "PendingFace": "store",
}
__all__ = ["Outbox", "OutboxCounts", "OutboxPublisher", "OutboxSettings", "OutboxWriteError", "PendingFace"]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value  # later lookups skip this function
    return value
