"""A validator for GreengrassIpc from a component's configuration model: the same checks the component makes
when it starts, so what a deployment's validation accepts is what the component will run with."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from ..config import ConfigModel, load_config
from ..errors import ConfigError
from .ipc import Validator


def model_validator(model: type[ConfigModel], component: str, recipe_keys: Collection[str] = ()) -> Validator:
    """Problems of a proposed configuration as "key: reason" lines. `recipe_keys` are top-level keys that only
    the recipe's lifecycle reads (e.g. `python`), which the model does not know."""
    ignored = frozenset(recipe_keys)

    def validate(configuration: dict[str, Any]) -> list[str]:
        data = {k: v for k, v in configuration.items() if k not in ignored}
        try:
            load_config(model, component, data, env={})  # the proposal alone, not this process's variables
        except ConfigError as error:
            return [f"{key}: {reason}" for key, reason in error.problems]
        return []

    return validate
