"""The durable outbox: a producer keeps each face on disk until the cloud's receipt says it is stored."""

from .config import OutboxSettings
from .publisher import OutboxPublisher
from .store import Outbox, OutboxCounts, OutboxWriteError, PendingFace

__all__ = ["Outbox", "OutboxCounts", "OutboxPublisher", "OutboxSettings", "OutboxWriteError", "PendingFace"]
