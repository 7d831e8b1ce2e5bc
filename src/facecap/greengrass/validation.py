"""A validator for GreengrassIpc from a component's configuration model: facecap.validation.check, the checks
the component makes when it starts without the network, so what a deployment's validation accepts is what the
component will run with."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from ..config import ConfigModel
from ..validation import check, errors
from .ipc import Validator


def model_validator(model: type[ConfigModel], component: str, recipe_keys: Collection[str] = ()) -> Validator:
    """Problems of a proposed configuration as "key: reason" lines. `recipe_keys` are top-level keys that only
    the recipe's lifecycle reads (e.g. `python`), which the model does not know."""
    ignored = frozenset(recipe_keys)

    def validate(configuration: dict[str, Any]) -> list[str]:
        data = {k: v for k, v in configuration.items() if k not in ignored}
        # The proposal alone, not this process's variables. Files the proposal names may arrive with the
        # same deployment, so only errors refuse it; the component checks the files when it starts.
        return [problem.line() for problem in errors(check(component, data, env={}, model=model))]

    return validate

