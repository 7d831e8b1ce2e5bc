"""One facecap component's life under Greengrass: its configuration from the nucleus, validated deployments,
live changes, and the RUNNING report once it is truly ready. Outside Greengrass it only loads the
configuration as before (--config, $FACECAP_CONFIG, FACECAP_* variables) and does nothing else.

Under Greengrass the recipe passes only the keys that need a restart through Setenv (a change there changes
the interpolated lifecycle, so the nucleus restarts the component); the keys a component applies live
(`ConfigModel.live_keys`) are read over IPC at start and delivered to `on_change` when a deployment changes
them, without a restart.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

from ..config import ConfigModel, load_config
from ..errors import ConfigError
from ..polling import wait_until
from .ipc import NUCLEUS_KEYS, GreengrassIpc
from .validation import model_validator

log = logging.getLogger(__name__)

M = TypeVar("M", bound=ConfigModel)

# Top-level keys only the recipe's lifecycle scripts read (packaging.components.RecipeKey), not facecap.
RECIPE_KEYS = ("python", "systemSitePackages", "installMosquitto")
LiveChange = Callable[[Any, frozenset[str]], None]


def changed_keys(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted paths of the leaves that differ, e.g. ["detection.scoreThreshold"]."""
    if not isinstance(old, Mapping) or not isinstance(new, Mapping):
        return [] if old == new else [prefix]
    paths: list[str] = []
    for key in sorted(set(old) | set(new)):
        paths += changed_keys(old.get(key), new.get(key), f"{prefix}.{key}" if prefix else key)
    return paths


class ComponentIpc(Generic[M]):
    """The component's configuration and its Greengrass IPC connection (a no-op outside Greengrass)."""

    def __init__(self, model: type[M], component: str, *, env: Mapping[str, str] | None = None) -> None:
        self.model = model
        self.component = component
        self._env = dict(os.environ if env is None else env)
        self._lock = threading.Lock()
        self._on_change: LiveChange | None = None
        self.config: M | None = None
        # The component's keys as the nucleus last gave them, leftovers of other versions included.
        self._raw: dict[str, Any] = {}
        self.ipc = GreengrassIpc(validator=model_validator(model, component, RECIPE_KEYS, running=lambda: self._raw),
                                 on_configuration=self._changed, env=self._env)

    @property
    def enabled(self) -> bool:
        return self.ipc.enabled

    def load(self, source: str | None) -> M:
        """Connect (under Greengrass) and build the configuration: from the nucleus under Greengrass, else from
        `source`; FACECAP_* variables override single keys either way. Raises ConfigError or GreengrassError."""
        data: str | dict[str, Any] | None = source
        if self.enabled:
            self.ipc.start()
            data = self._raw = self._own_keys(self.ipc.configuration())
        config = load_config(self.model, self.component, data, env=self._env,
                             leftovers=_ignored if self.enabled else None)
        with self._lock:
            self.config = config
        return config

    def on_change(self, apply: LiveChange) -> None:
        """`apply(new_config, changed_live_keys)` runs on the IPC thread after a deployment changed a live key."""
        self._on_change = apply

    def _own_keys(self, configuration: Mapping[str, Any]) -> dict[str, Any]:
        ignored = set(RECIPE_KEYS) | set(NUCLEUS_KEYS)
        return {k: v for k, v in configuration.items() if k not in ignored}

    def _changed(self, configuration: dict[str, Any]) -> None:
        self._raw = self._own_keys(configuration)
        new = load_config(self.model, self.component, self._raw, env=self._env, leftovers=_ignored)
        with self._lock:
            old = self.config
        if old is None:
            return
        paths = changed_keys(old.model_dump(by_alias=True, mode="json"), new.model_dump(by_alias=True, mode="json"))
        top = {path.split(".", 1)[0] for path in paths}
        live = frozenset(top & set(self.model.live_keys))
        restart = sorted(top - live)
        if restart:
            # Those keys are in the recipe's lifecycle: the nucleus restarts us with them.
            log.info("configuration of %s changed (%s): Greengrass restarts the component to apply it",
                     ", ".join(restart), ", ".join(p for p in paths if p.split(".", 1)[0] in restart))
        if live and self._on_change is not None:
            applied = ", ".join(f"{p}={_leaf(new, p)}" for p in paths if p.split(".", 1)[0] in live)
            try:
                self._on_change(new, live)
            except ConfigError as error:
                # The validation passed, yet the change cannot run here (a file went away in between): keep
                # the running settings, and the configuration they came from, so the next change retries it.
                log.error("could not apply the deployment's %s (%s); still running with the previous settings",
                          applied, "; ".join(f"{key}: {reason}" for key, reason in error.problems))
                return
            log.info("configuration applied live, without a restart: %s", applied)
        with self._lock:
            self.config = new

    def report_when_ready(self, ready: Callable[[], object], stop: threading.Event, what: str) -> None:
        """Report RUNNING from a thread of its own once `ready()` is true (Greengrass only)."""
        if not self.enabled:
            return

        def wait() -> None:
            while not stop.is_set():
                if wait_until(lambda: stop.is_set() or ready(), timeout=10.0, interval=0.1) and not stop.is_set():
                    self.ipc.report_running()
                    log.info("ready (%s): reported RUNNING to Greengrass", what)
                    return
                log.info("not ready yet: waiting for %s", what)

        threading.Thread(target=wait, name="greengrass-ready", daemon=True).start()

    def report_errored(self, reason: str) -> None:
        """A fatal fault: Greengrass marks the component ERRORED and restarts it (BROKEN after 3 in an hour)."""
        if self.enabled:
            log.error("reporting ERRORED to Greengrass: %s", reason)
            try:
                self.ipc.report_errored()
            except Exception as error:  # noqa: BLE001 - the exit code says it too
                log.error("%s", error)

    def close(self) -> None:
        self.ipc.close()


def _ignored(keys: list[str]) -> None:
    # The nucleus never removes a key: one that a newer version of the component added stays in the device's
    # configuration when an older version is deployed again (a fleet rolled back). Refusing it would leave
    # that version unable to start, so the rollback itself would fail.
    log.warning("ignoring configuration keys this version does not know (left by another version of the "
                "component; a deployment's RESET of them removes them): %s", ", ".join(keys))


def _leaf(config: ConfigModel, path: str) -> object:
    node: Any = config.model_dump(by_alias=True, mode="json")
    for part in path.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node
