"""A validator for GreengrassIpc from a component's configuration model: facecap.validation.check, the checks
the component makes when it starts without the network, so what a deployment's validation accepts is what the
component will run with."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import Any

from ..config import ConfigModel, unknown_keys, value_at, without_keys
from ..validation import Problem, check
from .ipc import Validator


def model_validator(model: type[ConfigModel], component: str, recipe_keys: Collection[str] = (),
                    running: Callable[[], Mapping[str, Any]] | None = None) -> Validator:
    """Problems of a proposed configuration as "key: reason" lines. `recipe_keys` are top-level keys that only
    the recipe's lifecycle reads (e.g. `python`), which the model does not know. `running`: the configuration
    the component runs with; a key the model does not know that is there with the same value is a leftover of
    another version (the component ignores it), while a new or changed one is a mistake, refused."""
    ignored = frozenset(recipe_keys)
    live = frozenset(model.live_keys)

    def refused(problem: Problem) -> bool:
        # A file under a restart key may arrive with the same deployment and is checked when the component
        # restarts. A live key is applied at once, in this process, on this machine: its file must be here now,
        # or the deployment would succeed and the component would fail at its next start.
        return problem.severity == "error" or (problem.about_file and top_key(problem.key) in live)

    def validate(configuration: dict[str, Any]) -> list[str]:
        data = {k: v for k, v in configuration.items() if k not in ignored}
        if running is not None:
            current, missing = running(), object()
            leftovers = [path for path in unknown_keys(model, data)
                         if value_at(current, path, missing) == value_at(data, path)]
            data = without_keys(data, leftovers)
        # The proposal alone, not this process's variables.
        problems = check(component, data, env={}, model=model)
        return [f"{problem.key}: {problem.reason}" for problem in problems if refused(problem)]

    return validate


def top_key(key: str) -> str:
    """The top-level key of a problem's key (`detection.modelPath` -> `detection`, `cameras[1].source` ->
    `cameras`)."""
    return key.split(".", 1)[0].split("[", 1)[0]

