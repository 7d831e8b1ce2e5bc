"""The `outbox` configuration section, shared by every producer that keeps its faces on disk until the
cloud confirms them (the detector, `facecap send --outbox`)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import Field

from ..config import CLIENT_ID, ConfigModel, Seconds

# A day at 5 faces/s is 432,000 faces; 2 GiB holds that many crops of up to ~4.9 KB each.
DEFAULT_MAX_FACES = 500_000
DEFAULT_MAX_BYTES = 2 * 1024 ** 3
# Twice the size the write-ahead log is cut back to (schema.py), so deletes always have room to log.
DEFAULT_MIN_FREE_BYTES = 128 * 1024 ** 2
# The component's work folder: the Greengrass recipes set it to {work:path}.
WORK_DIR_ENV = "FACECAP_WORK_DIR"


class OutboxSettings(ConfigModel):
    """Where the outbox lives, how big it may grow, and when unconfirmed faces are published again."""

    enabled: bool = Field(True, description="Keep each face on disk until its receipt arrives from the cloud.")
    dir: str = Field("", description="Folder of outbox.db; empty: `outbox` in the component's work folder "
                                     "($FACECAP_WORK_DIR, {work:path} under Greengrass), else in the current "
                                     "folder.")
    max_faces: int = Field(DEFAULT_MAX_FACES, ge=1, description="Most faces the outbox holds (a day at 5 faces/s "
                                                                "is 432,000).")
    max_bytes: int = Field(DEFAULT_MAX_BYTES, ge=1024 * 1024,
                           description="Most bytes of faces (payload and properties) the outbox holds.")
    min_free_bytes: int = Field(
        DEFAULT_MIN_FREE_BYTES, ge=0,
        description="Free space the outbox leaves on its disk. Below it the oldest faces overdue for their "
                    "receipt make room (drop-oldest); otherwise (refuse-newest, or every face's receipt on its "
                    "way) new faces go out without the outbox. A receipt needs room to delete its faces (SQLite's "
                    "write-ahead log, up to 64 MiB), so an outbox that filled its disk could never empty again.")
    when_full: Literal["drop-oldest", "refuse-newest"] = Field(
        "drop-oldest", description="When full: evict the oldest pending face to make room (`drop-oldest`), or "
                                   "refuse the new one (`refuse-newest`). Both are counted and logged.")
    max_unconfirmed: int = Field(
        256, ge=1, description="Most faces published and still waiting for their receipt; the rest wait in the "
                               "outbox on disk. This bounds what the edge broker holds in memory for this producer "
                               "when the uplink is slow or down (256 faces of 30 KB: 7.5 MB).")
    redeliver_after_seconds: Seconds = Field(
        60.0, description="Publish a face again when no receipt came this long after its last publish, "
                                "and none for any face either (while receipts come, the faces ahead of it are "
                                "still getting through a slow uplink; such a hold lasts at most "
                                "redeliverMaxSeconds).")
    redeliver_backoff: float = Field(2.0, ge=1, description="Each further attempt waits this many times longer.")
    redeliver_max_seconds: Seconds = Field(900.0, description="Longest wait between two attempts.")
    redeliver_max_per_second: float = Field(
        40.0, ge=0, description="Pace of publishing faces again (at start and when overdue), so a backlog "
                                "stays under the processor's per-device ceiling (50/s by default) with room "
                                "for fresh faces; 0: no limit.")
    bridge_client_id: str = Field(
        "", pattern=CLIENT_ID,
        description="Client id of the edge broker's bridge, whose $SYS state says when the uplink is up; empty: "
                    "facecap-edge-<deviceId>, the EdgeBroker's default.")

    def redeliver_delay(self, attempts: int) -> float:
        """Seconds to wait for a receipt after the `attempts`-th publish (1 for the first)."""
        delay = self.redeliver_after_seconds * self.redeliver_backoff ** max(0, min(attempts - 1, 30))
        return min(delay, self.longest_redeliver_delay())

    def longest_redeliver_delay(self) -> float:
        return max(self.redeliver_max_seconds, self.redeliver_after_seconds)

    def folder(self, env: Mapping[str, str] | None = None) -> Path:
        """Where outbox.db lives: `dir`, else `outbox` in the component's work folder."""
        if self.dir:
            return Path(self.dir).expanduser()
        return Path((os.environ if env is None else env).get(WORK_DIR_ENV) or ".") / "outbox"
