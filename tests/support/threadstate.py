"""Watch whether awscrt's threads keep their Python state from one callback to the next."""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable


class ThreadStateWatch:
    """Wraps `keep_thread_state`: each call notes whether its thread's `threading.local` still holds what
    an earlier call on that thread stored. A `threading.local` lives in the thread's Python state, so
    without a kept state every callback on an awscrt thread finds it empty."""

    def __init__(self, keep: Callable[[], None]) -> None:
        self._keep = keep
        self._local = threading.local()
        self.calls: dict[int, list[bool]] = defaultdict(list)

    def __call__(self) -> None:
        self.calls[threading.get_ident()].append(getattr(self._local, "seen", False))
        self._local.seen = True
        self._keep()

    def forgotten(self) -> dict[int, list[bool]]:
        """The threads on which a later call found the state of an earlier one gone."""
        return {ident: seen for ident, seen in self.calls.items() if not all(seen[1:])}
