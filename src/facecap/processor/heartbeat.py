"""The heartbeat file the container health check reads.

The processor rewrites it every heartbeatIntervalSeconds while its supervisor loop runs, so a wedged or
dead process goes stale; it also says for how long the broker connection has been down, so a processor that
cannot reach its broker reports unhealthy too.

Ages are measured on the monotonic clock (`monotonic`; one clock for every process of the machine, the
health check's included), not the wall clock (`time`, for people): a wall clock stepped back by a day made a
dead processor look healthy for that day.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def write_heartbeat(path: Path, state: Mapping[str, Any]) -> None:
    """Replace the file atomically, so the health check never reads half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps({"time": time.time(), "monotonic": time.monotonic(), **state}), encoding="utf-8")
    os.replace(temporary, path)


def check_heartbeat(path: Path, max_age: float, unhealthy_after: float | None = None,
                    now: float | None = None) -> tuple[bool, str]:
    """(healthy, explanation). Unhealthy when the file is missing or older than max_age, when the processor
    has not been connected for longer than `unhealthy_after` (never connected since it started counts),
    or when its store has been failing that long with faces pending. `unhealthy_after` defaults to max_age.
    `now`: the monotonic clock's reading."""
    now = time.monotonic() if now is None else now
    limit = max_age if unhealthy_after is None else unhealthy_after
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
        written = float(state["monotonic"])
    except FileNotFoundError:
        return False, f"no heartbeat file {path} (processor not started yet, or stopped)"
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return False, f"unreadable heartbeat {path}: {exc}"
    age = now - written
    if not 0 <= age <= max_age:  # negative: written by another boot (a /tmp that survived), not this process
        return False, (f"heartbeat is {age:.0f} s old (limit {max_age:g} s): the processor is stuck or gone"
                       if age > 0 else f"heartbeat {path} is not from this boot: the processor is not running")
    down_for = state.get("disconnectedFor")
    if isinstance(down_for, (int, float)) and down_for + age > limit:
        never = "" if state.get("subscribed") else " (never subscribed since it started)"
        return False, f"not connected to the broker for {down_for + age:.0f} s{never} (limit {limit:g} s)"
    failing = state.get("storeFailingFor")
    if isinstance(failing, (int, float)) and failing + age > limit and state.get("pending"):
        return False, (f"the store has been failing for {failing + age:.0f} s with {state.get('pending')} "
                       f"face(s) pending (limit {limit:g} s)")
    return True, (f"ok: heartbeat {age:.1f} s old, connected {state.get('connected')}, "
                  f"stored {state.get('stored')}, quarantined {state.get('quarantined')}, "
                  f"pending {state.get('pending')}")
