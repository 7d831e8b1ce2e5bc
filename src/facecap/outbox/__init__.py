"""The durable outbox: a producer keeps each face on disk until the cloud's receipt says it is stored.

The names below load on first use (PEP 562), so reading an outbox (`facecap outbox`) or its settings does
not load the MQTT client behind OutboxPublisher.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazyexports import lazy_exports

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


__getattr__ = lazy_exports(__name__, _HOMES, globals())
