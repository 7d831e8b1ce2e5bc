"""Configuration models and loading.

Each component has one pydantic model. Keys are camelCase, as Greengrass recipes and the console use;
unknown keys are rejected. A configuration is assembled from, in increasing priority:

1. the model's defaults,
2. ``--config`` (a JSON string, as a recipe passes ``{configuration:/...}``, or a JSON file),
3. environment variables: ``FACECAP_<KEY>`` for a top-level key (JSON for an object or list, plain text
   otherwise) and ``FACECAP_<KEY>__<SUBKEY>`` for one nested value. Keys are written in UPPER_SNAKE case,
   so ``mqtt.passwordFile`` is ``FACECAP_MQTT__PASSWORD_FILE``.

Greengrass leaves ``{configuration:/x}`` unreplaced when the key is missing, so such a leftover is
reported as the missing key it is instead of being taken as a value.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar, TypeVar, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.alias_generators import to_camel
from typing_extensions import Self

from .contract import DEFAULT_TOPIC_PREFIX, check_device_id, check_topic_prefix
from .errors import ConfigError, ContractError

ENV_PREFIX = "FACECAP_"
# Where a component's whole configuration comes from when --config is not given.
CONFIG_ENV = "FACECAP_CONFIG"
_UNREPLACED = re.compile(r"^\{(configuration|iot|work|artifacts):([^}]*)\}$")

M = TypeVar("M", bound="ConfigModel")

# Text rules the models share, each with the reason a user reads when a value breaks it (pydantic would
# quote the regular expression).
NO_CONTROL = r"^[^\x00-\x1f\x7f]*$"
NO_SPACE = r"^[^\s\x00-\x1f\x7f]*$"
CLIENT_ID = r"^[A-Za-z0-9._-]{0,128}$"
_PATTERN_REASONS = {
    NO_CONTROL: "must not contain control characters (line breaks, tabs, NUL)",
    NO_SPACE: "must not contain spaces or control characters",
    CLIENT_ID: "must be at most 128 of the characters A-Z a-z 0-9 . _ -",
}

# Value ranges the models share, each written once.
Port = Annotated[int, Field(ge=1, le=65535)]
# MQTT carries the keep-alive in 16 bits; under 5 s a busy link would drop for nothing.
KeepAliveSeconds = Annotated[int, Field(ge=5, le=65535)]
# A timeout or a backoff delay. awscrt and the waits hold these as milliseconds in C integers, and beyond an
# hour nothing reconnects in any useful sense, so an hour is the ceiling.
WaitSeconds = Annotated[float, Field(gt=0, le=3600)]
# A period or a time limit that must pass before something happens: at 0 a loop would spin or a wait end at
# once.
Seconds = Annotated[float, Field(gt=0)]
# A time where 0 means "not at all" (retry forever, no re-send, no wait), as each key's description says.
SecondsOrOff = Annotated[float, Field(ge=0)]
# A ratio strictly between nothing and all: a threshold at either end would drop or keep everything.
OpenFraction = Annotated[float, Field(gt=0, lt=1)]


class ConfigModel(BaseModel):
    """Base of every configuration section: camelCase keys, unknown keys rejected, immutable."""

    model_config = ConfigDict(
        extra="forbid",
        alias_generator=to_camel,
        populate_by_name=True,
        frozen=True,
        validate_default=True,
    )
    # (lower, upper) field pairs where upper must be at least lower, e.g. a backoff's start and ceiling.
    ordered_fields: ClassVar[tuple[tuple[str, str], ...]] = ()
    # Top-level keys (camelCase) a running component applies live when a Greengrass deployment changes them.
    # The recipe leaves them out of its lifecycle, so such a change does not restart the component; a change
    # of any other key changes the interpolated lifecycle, and the nucleus restarts the component with it.
    live_keys: ClassVar[tuple[str, ...]] = ()
    # Keys inside a live section that only take effect at start (dotted camelCase paths). The recipe puts them
    # in its lifecycle as well, so changing one restarts the component instead of being "applied" live.
    restart_paths: ClassVar[tuple[str, ...]] = ()
    # Top-level keys whose value is a secret: shown as *** wherever facecap prints a configuration.
    secret_keys: ClassVar[tuple[str, ...]] = ()

    @model_validator(mode="after")
    def _check_ordered_fields(self) -> Self:
        for lower, upper in self.ordered_fields:
            if getattr(self, upper) < getattr(self, lower):
                raise ValueError(f"{to_camel(upper)} must be at least {to_camel(lower)}")
        return self


class LoggingSettings(ConfigModel):
    level: str = Field("INFO", pattern=r"^(DEBUG|INFO|WARNING|ERROR)$",
                       description="Log level of facecap's own messages (DEBUG adds a line per face); libraries log "
                                   "at INFO and above, since botocore's DEBUG output prints request credentials.")
    format: str = Field("text", pattern=r"^(text|json)$", description="`text` lines or one JSON object a line.")


class DeviceConfig(ConfigModel):
    """A component that runs on a device and names it."""

    device_id: str = Field("", description="Device id in topics, [A-Za-z0-9._-]{1,64}; empty uses "
                                           "AWS_IOT_THING_NAME (the Greengrass thing name), then the host name.")

    @field_validator("device_id")
    @classmethod
    def _check_device_id(cls, value: str) -> str:
        return value if value == "" else as_value_error(lambda _, v: check_device_id(v), "device-id", value)


class TopicConfig(ConfigModel):
    """A component that publishes or reads face messages."""

    topic_prefix: str = Field(DEFAULT_TOPIC_PREFIX,
                              description="Faces travel on `<topicPrefix>/<deviceId>/<cameraId>`; the logger and "
                                          "the processor read `<topicPrefix>/#`.")

    @field_validator("topic_prefix")
    @classmethod
    def _check_topic_prefix(cls, value: str) -> str:
        return check_topic_prefix(value)


class ComponentConfig(TopicConfig, DeviceConfig):
    """An edge component that handles faces: deviceId and topicPrefix, each checked by one rule."""


def as_value_error(check: Callable[[str, str], str], kind: str, value: str) -> str:
    """Run a contract check where pydantic wants a ValueError (it reports its text under the key)."""
    try:
        return check(kind, value)
    except ContractError as exc:
        raise ValueError(exc.detail) from None


def _snake_upper(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).upper()


def env_name(*keys: str) -> str:
    """The environment variable load_config reads a key from: camelCase keys -> FACECAP_UPPER_SNAKE, nested
    keys joined by a double underscore (`mqtt`, `passwordFile` -> FACECAP_MQTT__PASSWORD_FILE)."""
    return ENV_PREFIX + "__".join(_snake_upper(key) for key in keys)


def _is_structured(annotation: Any) -> bool:
    """True when a field holds an object or a list, so its environment value is JSON."""
    candidates = [annotation, *get_args(annotation)]
    for candidate in candidates:
        origin = get_origin(candidate) or candidate
        if isinstance(origin, type) and (issubclass(origin, (BaseModel, dict, list, tuple))):
            return True
    return False


def deep_merge(base: dict[str, Any], overlay: Mapping[str, Any]) -> dict[str, Any]:
    """`overlay` over `base`, object by object at every level (a list or value replaces)."""
    merged = dict(base)
    for key, value in overlay.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(dict(merged[key]), value)
        else:
            merged[key] = value
    return merged


def _field_for_env(model: type[BaseModel], part: str) -> tuple[str, Any] | None:
    """Find the field whose UPPER_SNAKE alias or name is `part` of a variable's name: (alias, annotation)."""
    for name, info in model.model_fields.items():
        alias = info.alias or name
        if part in (_snake_upper(alias), name.upper()):
            return alias, info.annotation
    return None


def _env_overlay(model: type[BaseModel], env: Mapping[str, str], problems: list[tuple[str, str]]) -> dict[str, Any]:
    overlay: dict[str, Any] = {}
    for var, raw in sorted(env.items()):
        if not var.startswith(ENV_PREFIX) or not raw:
            continue
        parts = var[len(ENV_PREFIX):].split("__")
        target: type[BaseModel] | None = model
        path: list[str] = []
        annotation: Any = None
        for part in parts:
            found = _field_for_env(target, part) if target is not None else None
            if found is None:
                path = []
                break
            alias, annotation = found
            path.append(alias)
            target = next(
                (a for a in [annotation, *get_args(annotation)] if isinstance(a, type) and issubclass(a, BaseModel)),
                None,
            )
        if not path:
            continue  # another component's variable, or FACECAP_CONFIG itself
        value: Any = raw
        if _is_structured(annotation) and not _UNREPLACED.fullmatch(raw):
            try:
                value = json.loads(raw)
            except json.JSONDecodeError as exc:
                problems.append((".".join(path), f"environment variable {var} is not valid JSON: {exc.msg}"))
                continue
        node = overlay
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
    return overlay


def _unreplaced_variables(data: Any, path: str = "") -> list[tuple[str, str]]:
    if isinstance(data, Mapping):
        return [p for key, value in data.items() for p in _unreplaced_variables(value, f"{path}.{key}".lstrip("."))]
    if isinstance(data, list):
        return [p for i, value in enumerate(data) for p in _unreplaced_variables(value, f"{path}[{i}]")]
    if isinstance(data, str) and (match := _UNREPLACED.fullmatch(data)):
        return [(path or "<root>", f"Greengrass left the recipe variable {data} unreplaced: "
                 f"the component configuration has no value at {match.group(2) or '/'}")]
    return []


def config_source(arg: str | None, env: Mapping[str, str] | None = None) -> str | None:
    """The configuration a component runs with: ``--config`` when given, else ``$FACECAP_CONFIG``, else None
    (the defaults). Read when the command runs, never as an argparse default, so `--help` and tests that
    build the parser do not depend on the environment."""
    if arg:
        return arg
    return (os.environ if env is None else env).get(CONFIG_ENV) or None


def read_config_source(source: str, option: str = "--config") -> dict[str, Any]:
    """Parse a configuration given as `option`: a JSON object given inline, or the path of a JSON file."""
    text = source.strip()
    origin = option
    if not text:
        raise ConfigError("facecap", [(option, "empty: give a JSON object or the path of a JSON file")])
    if not text.startswith("{"):
        text = _read_config_file(Path(source), option)
        origin = source
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError("facecap", [(origin, f"invalid JSON at line {exc.lineno}: {exc.msg}")]) from exc
    if not isinstance(data, dict):
        raise ConfigError("facecap", [(origin, "the configuration must be a JSON object")])
    return data


def _read_config_file(path: Path, option: str) -> str:
    hint = "give a JSON object or the path of a JSON file"
    if not path.exists():
        raise ConfigError("facecap", [(option, f"file {path} does not exist (and it is not a JSON object)")], hint)
    if not path.is_file():
        raise ConfigError("facecap", [(option, f"{path} is not a file")], hint)
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError("facecap", [(str(path), f"not UTF-8 text (byte {exc.start})")],
                          "save the file as UTF-8") from None
    except OSError as exc:
        raise ConfigError("facecap", [(str(path), f"cannot read it: {exc.strerror}")],
                          "check its permissions") from None


def load_config(
    model: type[M],
    component: str,
    source: str | Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    *,
    option: str = "--config",
    overrides: Mapping[str, Any] | None = None,
    leftovers: Callable[[list[str]], None] | None = None,
) -> M:
    """Build a validated configuration, or raise ConfigError naming every bad key. `option` names the
    source in errors (the command line argument it came from); `overrides` (command line flags) win over
    the environment. `leftovers`: drop the keys the model does not know and tell it their names, instead of
    refusing them (under Greengrass, where another version of the component may have left them)."""
    problems: list[tuple[str, str]] = []
    data: dict[str, Any] = {}
    if isinstance(source, Mapping):
        data = dict(source)
    elif source is not None:
        data = read_config_source(source, option)
    data = deep_merge(data, _env_overlay(model, os.environ if env is None else env, problems))
    data = deep_merge(data, overrides or {})
    problems += _unreplaced_variables(data)
    if problems:
        raise ConfigError(component, problems)
    if leftovers is not None and (unknown := unknown_keys(model, data)):
        data = without_keys(data, unknown)
        leftovers([key_text(path) for path in unknown])
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(component, _describe_errors(exc.errors())) from None


KeyPath = tuple[str | int, ...]


def unknown_keys(model: type[BaseModel], data: Mapping[str, Any], at: KeyPath = ()) -> list[KeyPath]:
    """Where `data` has keys `model` does not know: its own, its sections', and those of each item of a list of
    sections (`cameras`)."""
    annotations: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        annotations[name] = annotations[info.alias or name] = info.annotation
    found: list[KeyPath] = []
    for key, value in data.items():
        if key not in annotations:
            found.append((*at, key))
            continue
        section, listed = _section_of(annotations[key])
        if section is not None and not listed and isinstance(value, Mapping):
            found += unknown_keys(section, value, (*at, key))
        elif section is not None and listed and isinstance(value, list):
            for index, item in enumerate(value):
                if isinstance(item, Mapping):
                    found += unknown_keys(section, item, (*at, key, index))
    return found


def _section_of(annotation: Any) -> tuple[type[BaseModel] | None, bool]:
    """The model of a section field, and whether the field is a list of them."""
    for candidate in (annotation, *get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate, False
        if get_origin(candidate) is list:
            item = next(iter(get_args(candidate)), None)
            if isinstance(item, type) and issubclass(item, BaseModel):
                return item, True
    return None, False


def without_keys(data: Mapping[str, Any], paths: list[KeyPath]) -> dict[str, Any]:
    """A copy of `data` without the keys at `paths`."""
    copy: dict[str, Any] = json.loads(json.dumps(data))
    for path in paths:
        node: Any = copy
        for part in path[:-1]:
            node = node[part]
        node.pop(path[-1], None)
    return copy


def value_at(data: Any, path: KeyPath, missing: object = None) -> Any:
    """The value at `path` in nested dicts and lists, or `missing`."""
    for part in path:
        try:
            data = data[part]
        except (KeyError, IndexError, TypeError):
            return missing
    return data


def key_text(path: KeyPath) -> str:
    """`mqtt.newKey`, `cameras[1].source`: a key as errors and logs name it."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


def with_flags(
    model: type[M],
    component: str,
    flags: Mapping[str, tuple[str, Any]],
    base: str | Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
) -> M:
    """Like load_config, with command line flags set over `base` (a mapping, or --config's text or file) and
    the environment: {flag: (dotted key, value or None)}. A flag goes through the same model as its key, so
    both take the same values; a problem names the flag."""
    data: dict[str, Any] = {}
    flag_of: dict[str, str] = {}
    for flag, (key, value) in flags.items():
        if value is None:
            continue
        nested: Any = value
        for part in reversed(key.split(".")):
            nested = {part: nested}
        data = deep_merge(data, nested)
        flag_of[key] = flag
    try:
        return load_config(model, component, base, env=env, overrides=data)
    except ConfigError as exc:
        problems = [(f"{flag_of[key]} ({key})" if key in flag_of else key, reason) for key, reason in exc.problems]
        hint = "give the flag a value its key accepts" if any(k in flag_of for k, _ in exc.problems) else exc.hint
        raise ConfigError(component, problems, hint) from None


# pydantic names the member of a union that failed after the key ("width.constrained-int", "width.literal['auto']");
# a key's own parts are camelCase names and list indexes.
_UNION_MEMBER = re.compile(r"^(int|str|float|bool|none|.*[-\[(].*)$")


def _describe_errors(errors: list[Any]) -> list[tuple[str, str]]:
    """(key, reason) per bad key; a value that fits no member of a union is one problem, its reasons joined."""
    reasons: dict[str, list[str]] = {}
    for err in errors:
        parts = [str(part) for part in err["loc"] if not _UNION_MEMBER.match(str(part))]
        key = ".".join(parts) or "<root>"
        reason = "unknown key" if err["type"] == "extra_forbidden" else str(err["msg"])
        if err["type"] == "string_pattern_mismatch":
            reason = _PATTERN_REASONS.get(err["ctx"]["pattern"], reason)
        reason = reason.removeprefix("Value error, ")  # pydantic's wording for our own validators' ValueError
        if reason not in reasons.setdefault(key, []):
            reasons[key].append(reason)
    return [(key, ", or ".join(texts)) for key, texts in reasons.items()]


def default_configuration(model: type[ConfigModel]) -> dict[str, Any]:
    """The defaults as a recipe's DefaultConfiguration writes them (camelCase, JSON types)."""
    return model().model_dump(mode="json", by_alias=True)


def describe(model: type[BaseModel], prefix: str = "") -> list[tuple[str, str, str]]:
    """(key, default, description) for every leaf key, for docs/configuration.md."""
    rows: list[tuple[str, str, str]] = []
    for name, info in model.model_fields.items():
        key = f"{prefix}{info.alias or name}"
        nested = next(
            (a for a in [info.annotation, *get_args(info.annotation)]
             if isinstance(a, type) and issubclass(a, BaseModel)),
            None,
        )
        if nested is not None:
            # A list of sections (the detector's `cameras`): its entries' keys as `cameras[].cameraId`.
            is_list = get_origin(info.annotation) is list
            if is_list:
                rows.append((key, "[]", info.description or ""))
            rows += describe(nested, f"{key}[]." if is_list else f"{key}.")
            continue
        if info.is_required():
            rows.append((key, "(required)", info.description or ""))
            continue
        default = info.get_default(call_default_factory=True)
        shown = json.dumps(default.get_secret_value() if hasattr(default, "get_secret_value") else default)
        rows.append((key, shown, info.description or ""))
    return rows


def resolve_device_id(configured: str) -> str:
    """An empty deviceId means the Greengrass thing name (the nucleus sets AWS_IOT_THING_NAME for every
    component), falling back to the host name on a laptop."""
    import socket

    candidate = configured or os.environ.get("AWS_IOT_THING_NAME", "") or socket.gethostname().split(".")[0]
    try:
        return check_device_id(candidate)
    except ContractError as exc:
        raise ConfigError("facecap", [("deviceId", exc.detail)]) from None


# Registry of component configuration models, filled by each component's config module, so that
# `facecap validate-config COMPONENT` and the docs/recipe generators find them by name.
COMPONENT_MODELS: dict[str, str] = {
    # component name -> "module:ClassName"
    "processor": "facecap.processor.config:ProcessorConfig",
    "broker": "facecap.broker.config:BrokerConfig",
    "logger": "facecap.logger.config:LoggerConfig",
    "detector": "facecap.detector.config:DetectorConfig",
}


def component_model(component: str) -> type[ConfigModel]:
    import importlib

    if component not in COMPONENT_MODELS:
        known = ", ".join(sorted(COMPONENT_MODELS)) or "none yet"
        raise ConfigError("facecap", [("COMPONENT", f"unknown component {component!r} (known: {known})")])
    module_name, class_name = COMPONENT_MODELS[component].split(":")
    model: type[ConfigModel] = getattr(importlib.import_module(module_name), class_name)
    return model
