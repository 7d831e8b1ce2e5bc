"""The heartbeat file the container health check reads.

The processor rewrites it every heartbeatIntervalSeconds while its supervisor loop runs, so a wedged or
dead process goes stale; it also says since when the broker connection is down, so a processor that
cannot reach its broker reports unhealthy too.
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
    temporary.write_text(json.dumps({"time": time.time(), **state}), encoding="utf-8")
    os.replace(temporary, path)


def check_heartbeat(path: Path, max_age: float, unhealthy_after: float | None = None,
                    now: float | None = None) -> tuple[bool, str]:
    """(healthy, explanation). Unhealthy when the file is missing or older than max_age, when the processor
    has not been connected for longer than `unhealthy_after` (never connected since it started counts),
    or when its store has been failing that long with faces pending. `unhealthy_after` defaults to max_age."""
    now = time.time() if now is None else now
    limit = max_age if unhealthy_after is None else unhealthy_after
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
        written = float(state["time"])
    except FileNotFoundError:
        return False, f"no heartbeat file {path} (processor not started yet, or stopped)"
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return False, f"unreadable heartbeat {path}: {exc}"
    age = now - written
    if age > max_age:
        return False, f"heartbeat is {age:.0f} s old (limit {max_age:g} s): the processor is stuck or gone"
    down_since = state.get("disconnectedSince")
    if isinstance(down_since, (int, float)) and now - down_since > limit:
        never = "" if state.get("subscribed") else " (never subscribed since it started)"
        return False, f"not connected to the broker for {now - down_since:.0f} s{never} (limit {limit:g} s)"
    failing = state.get("storeFailingFor")
    if isinstance(failing, (int, float)) and failing + age > limit and state.get("pending"):
        return False, (f"the store has been failing for {failing + age:.0f} s with {state.get('pending')} "
                       f"face(s) pending (limit {limit:g} s)")
    return True, (f"ok: heartbeat {age:.1f} s old, connected {state.get('connected')}, "
                  f"stored {state.get('stored')}, quarantined {state.get('quarantined')}, "
                  f"pending {state.get('pending')}")
