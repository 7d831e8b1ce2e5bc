"""The one set of configuration rules: what each component checks at start without the network.

`check` is what `facecap validate-config`, the Greengrass configuration validation and each component at
start run (`require`), so a configuration one of them accepts is one the others accept:

- the model: every key's type and range, unknown keys, Greengrass variables left unreplaced;
- the start rules: TLS towards a non-loopback host, the broker preflight (on the configuration as the broker
  will run it: local-only without bridge.host, which is a warning);
- files that must exist (passwords, certificates, the model, mosquitto). They are on the machine the
  component runs on, so validating elsewhere reports them as warnings, and errors with `strict`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from .config import ConfigModel, component_model, load_config
from .errors import ConfigError

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Problem:
    key: str
    reason: str
    severity: Severity = "error"
    about_file: bool = False  # a file that must exist on the component's own machine

    def line(self) -> str:
        return f"{self.key}: {self.reason}" if self.severity == "error" else f"warning: {self.key}: {self.reason}"


def check(component: str, data: Mapping[str, Any] | str, strict: bool = False, *,
          env: Mapping[str, str] | None = None, model: type[ConfigModel] | None = None,
          option: str = "--config") -> list[Problem]:
    """Every problem of a component's configuration (a mapping, or a JSON text or file as --config takes);
    empty when it would start. `env`: FACECAP_* variables to apply (default: none, the proposal alone)."""
    try:
        config = load_config(model or component_model(component), component, data, env=env or {}, option=option)
    except ConfigError as error:
        return [Problem(key, reason) for key, reason in error.problems]
    return _notes(component, config) + start_problems(component, config, strict)


def _notes(component: str, config: Any) -> list[Problem]:
    """What the component will do differently from what the configuration seems to ask: warnings, never
    errors, strict or not."""
    notes: list[Problem] = []
    if component != "broker":
        return notes
    if config.bridge.enabled and not config.bridge.host:
        notes.append(Problem("bridge.host", "empty, so the EdgeBroker runs local-only: faces wait on the device "
                                            "until a deployment sets it", "warning"))
    if unused := config.persistence.unused_interval():
        notes.append(Problem("persistence.autosaveIntervalSeconds", unused, "warning"))
    from .broker.certlife import identity_mismatch

    # The device id as the EdgeBroker will resolve it; unknown here (no deviceId, no thing name) is no finding.
    device_id = config.device_id or os.environ.get("AWS_IOT_THING_NAME", "")
    if mismatch := identity_mismatch(config.bridge, device_id):
        notes.append(Problem("bridge.certFile", mismatch, "warning"))
    return notes


def start_problems(component: str, config: Any, strict: bool = True) -> list[Problem]:
    """The start rules of a validated configuration; a file problem is a warning unless `strict`."""
    found: list[tuple[str, str, bool]] = []  # key, reason, about a file
    rule = _RULES.get(component)
    if rule is not None:
        rule(config, found)
    return [Problem(key, reason, "error" if strict or not is_file else "warning", is_file)
            for key, reason, is_file in found]


def errors(problems: list[Problem]) -> list[Problem]:
    return [p for p in problems if p.severity == "error"]


def require(component: str, config: Any) -> None:
    """At a component's start, on its own machine: raise ConfigError naming every problem, files included."""
    problems = start_problems(component, config, strict=True)
    if problems:
        raise ConfigError(component, [(p.key, p.reason) for p in problems])


# --- the rules ---------------------------------------------------------------------------------------------

Found = list[tuple[str, str, bool]]


def file_problem(path: str, what: str) -> str | None:
    """Why `path` cannot be read as the `what` a key names (None: it can), worded the same everywhere."""
    target = Path(path)
    if target.is_dir():
        return f"{what} {path} is a folder, not a file"
    if not target.exists():
        return f"{what} {path} does not exist"
    if not target.is_file():  # a FIFO, a socket or a device: reading it could block or never end
        return f"{what} {path} is not a regular file"
    if not os.access(path, os.R_OK):
        return f"{what} {path} is not readable by uid {os.geteuid()} (the component's user)"
    return None


def _readable(key: str, path: str, what: str, found: Found) -> None:
    problem = file_problem(path, what)
    if problem:
        found.append((key, problem, True))


def mqtt_problems(settings: Any, found: Found, section: str = "mqtt") -> None:
    """The files an MQTT connection reads when it starts: the password file, and with TLS the CA, the
    client certificate and its key."""
    if settings.password_file:
        _readable(f"{section}.passwordFile", settings.password_file, "password file", found)
    if settings.tls:
        for key, path, what in (("caFile", settings.ca_file, "CA file"), ("certFile", settings.cert_file,
                                "certificate"), ("keyFile", settings.key_file, "private key")):
            if path:
                _readable(f"{section}.{key}", path, what, found)


def _broker(config: Any, found: Found) -> None:
    from .broker.config import without_unset_bridge
    from .broker.preflight import preflight_problems

    # As it will run: the broker itself starts local-only without a bridge host (see _notes).
    problems = preflight_problems(without_unset_bridge(config), Path.cwd(), starting=False)
    found.extend((key, reason, (key, reason) in problems.files) for key, reason in problems)


def _detector(config: Any, found: Found) -> None:
    from .detector.camera import check_source  # OpenCV: only when a detector configuration is checked
    from .detector.config import camera_key
    from .detector.detection import model_problem

    # A source that can never work: a video file that must exist, a pipeline this OpenCV cannot open. With
    # several cameras the detector leaves such a camera out and runs the others (and says so in its log), so
    # it refuses to start, and this reports, only when no camera can work.
    camera_problems: Found = []
    cameras = config.camera_list()
    for index, entry in enumerate(cameras):
        try:
            check_source(entry, camera_key(config, index))
        except ConfigError as error:
            camera_problems.extend((key, reason, True) for key, reason in error.problems)
    if len({key.split(".")[0] for key, _, _ in camera_problems}) == len(cameras):
        found.extend(camera_problems)
    detection = config.detection
    if detection.model_path:
        problem = file_problem(detection.model_path, "YuNet model file") or model_problem(detection.model_path)
        if problem:
            found.append(("detection.modelPath", problem, True))
    if detection.haar_cascade_path:
        _readable("detection.haarCascadePath", detection.haar_cascade_path, "Haar cascade", found)
    mqtt_problems(config.mqtt, found)


def _mqtt_component(config: Any, found: Found) -> None:
    mqtt_problems(config.mqtt, found)


_RULES: dict[str, Callable[[Any, Found], None]] = {
    "broker": _broker,
    "detector": _detector,
    "logger": _mqtt_component,
    "processor": _mqtt_component,
}
