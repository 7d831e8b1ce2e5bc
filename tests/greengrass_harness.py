"""Run built Greengrass components the way the nucleus does, without the nucleus.

Given the build output of components/build.py (recipes + artifacts; `build_components` runs it), a
`Nucleus` here

* picks each recipe's manifest for this platform (PlatformHelper: first match; `/regex/`, `//`, `all`/`any`,
  lists of alternatives) and its lifecycle (the manifest's own, else the global one filtered by selections),
* resolves each component's configuration as KernelConfigResolver does: the running configuration, minus
  the deployment's RESET paths, plus the recipe defaults where nothing is set, plus the MERGE,
* interpolates the whole lifecycle, Setenv included: `{configuration:/json/pointer}` with Jackson's
  `JsonNode.at` (a value gives its text, an object or array compact JSON with sorted keys, a missing node is
  left as it is), `{artifacts:path}`, `{artifacts:decompressedPath}`, `{work:path}`, `{kernel:rootPath}`,
  `{iot:thingName}`, and `{<dependency>:configuration:/...}` / `{<dependency>:artifacts:path}` for direct
  dependencies,
* lays out the nucleus folders (packages/artifacts/<name>/<version>, packages/artifacts-unarchived/...
  with each `Unarchive: ZIP` artifact unpacked into <its name without .zip>/, work/<name>, logs/<name>.log),
  and runs Bootstrap, Install and Run as `sh -c` processes in the work folder (Bootstrap and Install under
  `install_wrapper`, e.g. `ip netns exec` of a namespace without network), with the environment the
  nucleus gives them (PATH, HOME, AWS_IOT_THING_NAME, AWS_REGION, SVCUID, GG_ROOT_CA_PATH, ... then the
  lifecycle's and the step's Setenv), honouring Timeout and SkipIf,
* stops a process as the nucleus does: SIGTERM to the process and its children, SIGKILL after a grace period,
* serves Greengrass IPC (tests/greengrass_ipc.py) on the socket named in
  AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT, each component authenticated by its SVCUID,
* validates a deployment's configuration as DynamicComponentConfigurationValidator does: a running component
  of the same version whose configuration would change, and that subscribed to validation, gets the proposed
  configuration; a REJECTED report or no report within the timeout fails the deployment with no state change
  (`DeploymentFailed`); a deployment that goes through sends ConfigurationUpdateEvents for every changed key,
* tracks each component's lifecycle state as Lifecycle does: a Run process is RUNNING once started; a Startup
  process keeps it STARTING until it reports RUNNING over IPC or exits 0 (ERRORED after its Timeout); an
  exit with a non-zero code, or an ERRORED report, is ERRORED, and the third error in the same state (within
  an hour) is BROKEN. With `supervise=True` the stand-in also restarts an ERRORED component, as the nucleus
  does; without it (the default) a test decides when to start what.

Deliberate differences, because no nucleus runs here: every step runs as the current user (the nucleus
runs components as ggc_user and RequiresPrivilege steps as root); there is no token exchange service or
cloud; configuration keys are compared case-sensitively (the nucleus's are not); every component passed to
`deploy` counts as a root component of the deployment; components start only when a test calls `start` or
`start_all` (which holds back a component whose HARD dependency is not RUNNING or FINISHED, where the
nucleus would keep it waiting).
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import platform
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml

from .greengrass_ipc import IpcServer, changed_key_paths

MISSING: Any = type("Missing", (), {"__repr__": lambda self: "MISSING"})()

# KernelConfigResolver's patterns; Java's \w is ASCII-only.
SAME_COMPONENT = re.compile(r"\{([.\w-]+):([^:}]*)}", re.ASCII)
CROSS_COMPONENT = re.compile(r"\{([.\w-]+):([.\w-]+):([^:}]*)}", re.ASCII)
BUILD_SCRIPT = Path(__file__).resolve().parent.parent / "components" / "build.py"
DEFAULT_STEP_TIMEOUT = 120.0  # seconds, Greengrass's default for Bootstrap, Install and Startup
DEFAULT_VALIDATION_TIMEOUT = 20.0  # DynamicComponentConfigurationValidator.DEFAULT_TIMEOUT_SECOND
MAXIMUM_CONTINUAL_ERROR = 3  # Lifecycle: the third ERRORED in the same state makes a component BROKEN
ERROR_RESET_TIME = 3600.0  # seconds, Lifecycle's default errorResetTime
# Lifecycle.ALLOWED_STATE_TRANSITION_FOR_REPORTING: what a component may report (UpdateState) in each state.
ALLOWED_REPORTS = {"NEW": {"ERRORED"}, "STARTING": {"RUNNING", "ERRORED", "FINISHED"},
                   "RUNNING": {"ERRORED", "FINISHED"}, "STOPPING": {"ERRORED", "FINISHED"}}
NUCLEUS_VERSION = "2.14.0"
NUCLEUS = "aws.greengrass.Nucleus"  # a dependency on it is met by the nucleus that runs the deployment


class HarnessError(Exception):
    """A recipe or deployment the nucleus would refuse."""


@dataclass(frozen=True)
class DeploymentResult:
    deployment_id: str
    status: str  # SUCCEEDED or FAILED_NO_STATE_CHANGE, as the nucleus reports them
    message: str = ""


class DeploymentFailed(Exception):  # noqa: N818 - named after the deployment outcome it carries
    """The deployment failed before it changed anything (a configuration validation said no)."""

    def __init__(self, result: DeploymentResult) -> None:
        super().__init__(result.message)
        self.result = result


# --- Jackson's view of configuration values --------------------------------------------------------------

def java_double(value: float) -> str:
    """Java's Double.toString: plain in [1e-3, 1e7) with at least one decimal, else d.dddE<n>."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    if value == 0:
        return "-0.0" if math.copysign(1.0, value) < 0 else "0.0"
    sign = "-" if value < 0 else ""
    digits_tuple, exponent = Decimal(repr(abs(value))).normalize().as_tuple()[1:]
    digits = "".join(map(str, digits_tuple))
    assert isinstance(exponent, int)
    point = len(digits) + exponent  # position of the decimal point relative to the digits
    if 1e-3 <= abs(value) < 1e7:
        if point <= 0:
            whole, fraction = "0", "0" * -point + digits
        elif point >= len(digits):
            whole, fraction = digits + "0" * (point - len(digits)), "0"
        else:
            whole, fraction = digits[:point], digits[point:]
        return f"{sign}{whole}.{fraction}"
    return f"{sign}{digits[0]}.{digits[1:] or '0'}E{point - 1}"


def jackson_json(node: Any) -> str:
    """JsonNode.toString() of what the nucleus builds with ORDER_MAP_ENTRIES_BY_KEYS: compact, sorted keys."""
    if isinstance(node, Mapping):
        items = (f"{json.dumps(str(k), ensure_ascii=False)}:{jackson_json(v)}" for k, v in sorted(node.items()))
        return "{" + ",".join(items) + "}"
    if isinstance(node, (list, tuple)):
        return "[" + ",".join(jackson_json(v) for v in node) + "]"
    if isinstance(node, float):
        return java_double(node)
    if node is None or isinstance(node, (bool, int)):
        return json.dumps(node)
    return json.dumps(str(node), ensure_ascii=False)


def jackson_text(node: Any) -> str:
    """What `{configuration:/x}` becomes: asText() of a value, compact JSON of a container."""
    if isinstance(node, (Mapping, list, tuple)):
        return jackson_json(node)
    if node is None:
        return "null"
    if isinstance(node, bool):
        return "true" if node else "false"
    if isinstance(node, float):
        return java_double(node)
    return str(node)


def _pointer_segments(pointer: str) -> list[str]:
    if pointer == "":
        return []
    if not pointer.startswith("/"):
        raise HarnessError(f"invalid JSON pointer {pointer!r}: it must start with '/'")
    return [s.replace("~1", "/").replace("~0", "~") for s in pointer[1:].split("/")]


def json_pointer(document: Any, pointer: str) -> Any:
    """JsonNode.at(pointer); MISSING when there is no such node. "" is the whole document."""
    node = document
    for segment in _pointer_segments(pointer):
        if isinstance(node, Mapping):
            node = node.get(segment, MISSING)
        elif isinstance(node, list) and re.fullmatch(r"0|[1-9]\d*", segment) and int(segment) < len(node):
            node = node[int(segment)]
        else:
            return MISSING
        if node is MISSING:
            return MISSING
    return node


# --- configuration merge -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class ConfigurationUpdate:
    """A deployment's configurationUpdate for one component: RESET paths first, then the MERGE."""

    merge: Mapping[str, Any] | None = None
    reset: Sequence[str] = ()


def _fill_missing(target: dict[str, Any], defaults: Mapping[str, Any]) -> None:
    # The nucleus merges defaults with timestamp 1, so they never replace a value that is already set.
    for key, value in defaults.items():
        if key not in target:
            target[key] = copy.deepcopy(value)
        elif isinstance(target[key], dict) and isinstance(value, Mapping):
            _fill_missing(target[key], value)


def _overlay(target: dict[str, Any], update: Mapping[str, Any]) -> None:
    # A newer timestamp wins for every leaf; maps merge key by key; a list is a leaf (replaced whole).
    for key, value in update.items():
        if isinstance(value, Mapping):
            if not isinstance(target.get(key), dict):
                target[key] = {}
            _overlay(target[key], value)
        else:
            target[key] = copy.deepcopy(value)


def _reset(target: dict[str, Any], pointer: str) -> dict[str, Any]:
    if pointer == "":
        return {}
    segments = _pointer_segments(pointer)
    if any(re.fullmatch(r"0|[1-9]\d*", s) for s in segments):
        # A segment that could index an array makes the nucleus refuse the reset (and log it).
        return target
    node: Any = target
    for segment in segments[:-1]:
        node = node.get(segment) if isinstance(node, dict) else None
    if isinstance(node, dict):
        node.pop(segments[-1], None)
    return target


def merge_configuration(
    defaults: Mapping[str, Any] | None,
    update: ConfigurationUpdate | None = None,
    running: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """KernelConfigResolver.resolveConfigurationToApply."""
    result: dict[str, Any] = copy.deepcopy(dict(running or {}))
    for pointer in (update.reset if update else ()):
        result = _reset(result, pointer)
    _fill_missing(result, defaults or {})
    if update and update.merge:
        _overlay(result, update.merge)
    return result


# --- recipes -------------------------------------------------------------------------------------------------

def get(mapping: Mapping[str, Any] | None, name: str, default: Any = None) -> Any:
    """Recipe keys are case-insensitive for the nucleus (`Install`, `install`)."""
    if not mapping:
        return default
    lowered = name.lower()
    return next((v for k, v in mapping.items() if str(k).lower() == lowered), default)


def current_platform() -> dict[str, str]:
    """os and architecture as PlatformResolver names them."""
    machine = platform.machine().lower()
    if machine in ("x86_64", "amd64"):
        architecture = "amd64"
    elif machine in ("i386", "i686", "x86"):
        architecture = "x86"
    elif machine in ("aarch64", "arm64"):
        architecture = "aarch64"
    elif "arm" in machine:
        architecture = "arm"
    else:
        architecture = "unknown"
    system = platform.system().lower()
    return {"os": "darwin" if system == "darwin" else system, "architecture": architecture}


def _platform_field_matches(name: str, label: str | None, template: Any) -> bool:
    if isinstance(template, list):
        return any(_platform_field_matches(name, label, t) for t in template)
    if template is None or label is None:
        return template is None and label is None
    if not isinstance(template, str):
        return False
    if template == "//":
        return True
    if len(template) > 2 and template.startswith("/") and template.endswith("/"):
        return re.fullmatch(template[1:-1], label) is not None
    wildcard = name in ("os", "architecture") and template in ("all", "any")
    return wildcard or (re.match(r"[a-zA-Z0-9]", template) is not None and template == label)


def select_manifest(recipe: Mapping[str, Any], target: Mapping[str, str] | None = None) -> dict[str, Any]:
    target = target or current_platform()
    for manifest in get(recipe, "Manifests") or []:
        wanted = get(manifest, "Platform") or {}
        if all(_platform_field_matches(k, target.get(k), v) for k, v in wanted.items()):
            return dict(manifest)
    raise HarnessError(f"{get(recipe, 'ComponentName')}: no manifest matches the platform {dict(target)}")


def _filter_selections(source: Any, keywords: set[str], selections: Sequence[str]) -> Any:
    """PlatformResolver.filterPlatform: a level whose keys include a selection keyword is a choice."""
    if not isinstance(source, Mapping):
        return source
    if any(k in keywords for k in source):
        chosen = next((source[s] for s in selections if source.get(s) is not None), source.get("all"))
        return MISSING if chosen is None else _filter_selections(chosen, keywords, selections)
    filtered = {k: _filter_selections(v, keywords, selections) for k, v in source.items()}
    return {k: v for k, v in filtered.items() if v is not MISSING and v is not None}


def resolve_lifecycle(recipe: Mapping[str, Any], manifest: Mapping[str, Any]) -> dict[str, Any]:
    own = get(manifest, "Lifecycle")
    if own:
        return dict(own)
    keywords = {"all"} | {s for m in get(recipe, "Manifests") or [] for s in get(m, "Selections") or []}
    selected = _filter_selections(get(recipe, "Lifecycle") or {}, keywords, list(get(manifest, "Selections") or []))
    return selected if isinstance(selected, dict) else {}


@dataclass(frozen=True)
class BuiltComponent:
    """One component version as components/build.py leaves it: its recipe and its artifact files."""

    recipe: dict[str, Any]
    artifacts: Path

    @property
    def name(self) -> str:
        return str(get(self.recipe, "ComponentName"))

    @property
    def version(self) -> str:
        return str(get(self.recipe, "ComponentVersion"))

    @property
    def dependencies(self) -> dict[str, Any]:
        return dict(get(self.recipe, "ComponentDependencies") or {})


def load_build(build_dir: Path) -> dict[str, BuiltComponent]:
    """Every component in a build folder (recipes/*.yaml, artifacts/<name>/<version>/), by name."""
    found: dict[str, BuiltComponent] = {}
    for recipe_file in sorted((build_dir / "recipes").glob("*.yaml")):
        recipe = yaml.safe_load(recipe_file.read_text(encoding="utf-8"))
        component = BuiltComponent(recipe, Path())
        component = BuiltComponent(recipe, build_dir / "artifacts" / component.name / component.version)
        found[component.name] = component
    if not found:
        raise HarnessError(f"no recipes in {build_dir / 'recipes'}")
    return found


def host_target() -> str:
    """The wheelhouse target (components/build.py TARGETS) of this machine and Python, e.g. linux-x86_64-cp311."""
    return f"linux-{platform.machine()}-cp{sys.version_info.major}{sys.version_info.minor}"


def build_components(output: Path, model_source: Path | None = None, wheel: Path | None = None,
                     timeout: float = 600) -> dict[str, BuiltComponent]:
    """Build every component with components/build.py (as the GDK's custom build does) into `output`: the
    wheelhouses for this machine's target only (unless FACECAP_PLATFORMS says otherwise), which is all the
    stand-in installs and keeps the build short."""
    command = [sys.executable, str(BUILD_SCRIPT), "--all", "--output", str(output)]
    env = {"FACECAP_PLATFORMS": host_target(), **os.environ}
    if model_source is not None:
        env["FACECAP_MODEL_SOURCE"] = str(model_source)  # as a user points the GDK build at a local copy
    if wheel is not None:
        command += ["--wheel", str(wheel)]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    if result.returncode != 0:
        raise HarnessError(f"components/build.py failed (exit {result.returncode}):\n{result.stdout}{result.stderr}")
    return load_build(output)


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text)[:3])


def check_nucleus_requirement(component: BuiltComponent) -> None:
    """A dependency on aws.greengrass.Nucleus must accept the running nucleus, or the deployment fails."""
    spec = component.dependencies.get(NUCLEUS)
    requirement = str(get(spec, "VersionRequirement", "") or "") if spec else ""
    running = _version(NUCLEUS_VERSION)
    for clause in requirement.split():
        match = re.fullmatch(r"(>=|<=|>|<|=)?(\d+\.\d+\.\d+)", clause)
        if match is None:
            raise HarnessError(f"{component.name}: cannot read the nucleus requirement {requirement!r}")
        operator, wanted = match.group(1) or "=", _version(match.group(2))
        ok = {">=": running >= wanted, "<=": running <= wanted, ">": running > wanted, "<": running < wanted,
              "=": running == wanted}[operator]
        if not ok:
            raise HarnessError(f"{component.name} needs {NUCLEUS} {requirement}; this one is {NUCLEUS_VERSION}")


# --- the nucleus -------------------------------------------------------------------------------------------

@dataclass
class StepResult:
    step: str
    returncode: int | None  # None: skipped (SkipIf) or not defined
    output: str = ""
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return self.returncode in (0, None) and not self.timed_out


@dataclass
class Service:
    component: BuiltComponent
    configuration: dict[str, Any]
    lifecycle: dict[str, Any] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    log: Any = None
    run_log_start: int = 0  # where the latest Run's output begins in the log, which every run appends to
    state: str = "NEW"
    generation: int = 0  # bumped at every start and stop, so a stale process exit changes nothing
    errors: dict[str, list[float]] = field(default_factory=dict)  # state -> times of ERRORED in that state

    def carry_over(self, previous: Service) -> None:
        """A redeployed component keeps its process and lifecycle state."""
        self.process, self.log, self.run_log_start = previous.process, previous.log, previous.run_log_start
        self.state, self.generation, self.errors = previous.state, previous.generation, previous.errors


class Nucleus:
    """A folder laid out like /greengrass/v2 and the processes of the components deployed into it."""

    def __init__(
        self,
        root: Path,
        thing_name: str = "harness-thing",
        region: str = "us-east-1",
        extra_env: Mapping[str, str] | None = None,
        target_platform: Mapping[str, str] | None = None,
        *,
        supervise: bool = False,
    ) -> None:
        self.root = root.resolve()
        self.supervise = supervise
        self.thing_name = thing_name
        self.region = region
        self.extra_env = dict(extra_env or {})
        self.platform = dict(target_platform or current_platform())
        self.services: dict[str, Service] = {}
        self.reinstall: set[str] = set()
        self._svcuid: dict[str, str] = {}  # name -> token, stable for a component like the nucleus's private config
        self.history: dict[str, list[str]] = {}  # name -> every lifecycle state it went through
        self.deployments: list[DeploymentResult] = []
        self.ignored_reports: list[tuple[str, str, str]] = []  # (component, its state, the state it reported)
        self.waiting: list[str] = []  # held back by start_all: a HARD dependency is not RUNNING
        # A command that Bootstrap and Install run under, e.g. ["ip", "netns", "exec", NAME] for a network
        # namespace with nothing but loopback: proof that installing needs no network.
        self.install_wrapper: list[str] = []
        self._lock = threading.RLock()
        self._state_changed = threading.Condition(self._lock)
        self._ipc: IpcServer | None = None
        socket_path = self.root / "ipc.socket"
        if len(str(socket_path)) > 100:  # sun_path holds 108 bytes; pytest's folders can be longer
            socket_path = Path(tempfile.mkdtemp(prefix="gg-ipc-")) / "ipc.socket"
        self.socket_path = socket_path
        for folder in ("packages/artifacts", "packages/artifacts-unarchived", "packages/recipes", "work", "logs"):
            (self.root / folder).mkdir(parents=True, exist_ok=True)

    # paths, as NucleusPaths names them
    def artifact_path(self, name: str, version: str) -> Path:
        return self.root / "packages" / "artifacts" / name / version

    def decompressed_path(self, name: str, version: str) -> Path:
        return self.root / "packages" / "artifacts-unarchived" / name / version

    def work_path(self, name: str) -> Path:
        return self.root / "work" / name

    def log_path(self, name: str) -> Path:
        return self.root / "logs" / f"{name}.log"

    def log_text(self, name: str) -> str:
        path = self.log_path(name)
        return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""

    def run_log_text(self, name: str) -> str:
        """The output of the component's latest Run only: the log, like the nucleus's, keeps every run."""
        return read_from(self.log_path(name), self.services[name].run_log_start)

    # deployment
    def deploy(
        self,
        components: Iterable[BuiltComponent],
        updates: Mapping[str, ConfigurationUpdate] | None = None,
        *,
        validation_timeout: float = DEFAULT_VALIDATION_TIMEOUT,
    ) -> set[str]:
        """Resolve configuration and lifecycle of every component of a deployment (artifacts copied into
        the component store). Returns the names whose interpolated lifecycle changed, the components the
        nucleus would restart; of those, `self.reinstall` holds the ones it would install again (a new
        version or a changed Install step). Components left out of the deployment are stopped and removed.

        Before anything changes, running components validate their new configuration over IPC (the
        deployment's configurationValidationPolicy, `validation_timeout` seconds): a rejection or a missing
        report raises DeploymentFailed and leaves every component as it was. Every deployment's outcome is
        appended to `self.deployments`."""
        deployed = {c.name: c for c in components}
        updates = dict(updates or {})
        unknown = set(updates) - set(deployed)
        if unknown:
            raise HarnessError(f"configuration updates for components not in the deployment: {sorted(unknown)}")
        for component in deployed.values():
            check_nucleus_requirement(component)
            missing = [d for d in component.dependencies if d not in deployed and d != NUCLEUS]
            if missing:
                raise HarnessError(f"{component.name} depends on {missing}, which the deployment lacks")
        resolved = self._resolve(deployed, updates)
        deployment_id = str(uuid.uuid4())
        failure = self._validate(deployment_id, resolved, validation_timeout)
        if failure:
            result = DeploymentResult(deployment_id, "FAILED_NO_STATE_CHANGE", failure)
            self.deployments.append(result)
            raise DeploymentFailed(result)
        for name in set(self.services) - set(deployed):
            self.stop(name)
            del self.services[name]
        changed = self._apply(resolved)
        self.deployments.append(DeploymentResult(deployment_id, "SUCCEEDED"))
        return changed

    def _resolve(self, deployed: Mapping[str, BuiltComponent],
                 updates: Mapping[str, ConfigurationUpdate]) -> dict[str, Service]:
        resolved: dict[str, Service] = {}
        for name, component in deployed.items():
            previous = self.services.get(name)
            defaults = get(get(component.recipe, "ComponentConfiguration"), "DefaultConfiguration") or {}
            configuration = merge_configuration(
                defaults, updates.get(name), previous.configuration if previous else None)
            resolved[name] = Service(component, configuration)
            self._store_artifacts(component)
        for service in resolved.values():
            manifest = select_manifest(service.component.recipe, self.platform)
            service.lifecycle = self.interpolate(resolve_lifecycle(service.component.recipe, manifest),
                                                 service.component, resolved)
        return resolved

    def _validate(self, deployment_id: str, resolved: Mapping[str, Service], timeout: float) -> str:
        """Ask each running component of the same version whose configuration changes; the failure, or ""."""
        if self._ipc is None:
            return ""
        reports = {}
        for name, service in resolved.items():
            previous = self.services.get(name)
            if (previous is None or previous.component.version != service.component.version
                    or previous.configuration == service.configuration):
                continue  # new components and new versions are not asked (they start with the new one)
            report = self._ipc.request_validation(name, deployment_id, service.configuration)
            if report is not None:
                reports[name] = report
        try:
            deadline = time.monotonic() + timeout
            answers = {name: report.result(timeout=max(0.0, deadline - time.monotonic()))
                       for name, report in reports.items()}
        except Exception as error:  # a timeout or a cancelled report fails the deployment
            return f"Error while waiting for validation report for one or more components:{error!r}"
        finally:
            for name in reports:
                self._ipc.discard_validation(name, deployment_id)
        rejected = [f" {{ name = {name}, message = {answer.get('message')} }}"
                    for name, answer in sorted(answers.items()) if answer.get("status") == "REJECTED"]
        if rejected:
            return "Components reported that their to-be-deployed configuration is invalid" + "".join(rejected)
        return ""

    def _apply(self, resolved: Mapping[str, Service]) -> set[str]:
        changed: set[str] = set()
        self.reinstall = set()
        for name, service in resolved.items():
            previous = self.services.get(name)
            if previous is None or previous.lifecycle != service.lifecycle:
                changed.add(name)
            if (previous is None or previous.component.version != service.component.version
                    or get(previous.lifecycle, "Install") != get(service.lifecycle, "Install")):
                self.reinstall.add(name)
            if previous is not None:
                service.carry_over(previous)
            self.services[name] = service
            if previous is not None and self._ipc is not None:
                paths = changed_key_paths(previous.configuration, service.configuration)
                self._ipc.configuration_changed(name, paths)
        return changed

    def _store_artifacts(self, component: BuiltComponent) -> None:
        manifest = select_manifest(component.recipe, self.platform)
        store = self.artifact_path(component.name, component.version)
        store.mkdir(parents=True, exist_ok=True)
        for artifact in get(manifest, "Artifacts") or []:
            file_name = str(get(artifact, "URI")).rsplit("/", 1)[-1]
            source = component.artifacts / file_name
            if not source.is_file():
                raise HarnessError(f"{component.name}: artifact {file_name} is not in {component.artifacts}")
            shutil.copy2(source, store / file_name)
            if str(get(artifact, "Unarchive", "NONE")).upper() == "ZIP":
                target = self.decompressed_path(component.name, component.version) / Path(file_name).stem
                with zipfile.ZipFile(source) as archive:
                    archive.extractall(target)
        self.decompressed_path(component.name, component.version).mkdir(parents=True, exist_ok=True)
        self.work_path(component.name).mkdir(parents=True, exist_ok=True)

    def _system_parameter(self, name: str, version: str, namespace: str, key: str) -> str | None:
        values = {
            ("artifacts", "path"): lambda: str(self.artifact_path(name, version)),
            ("artifacts", "decompressedPath"): lambda: str(self.decompressed_path(name, version)),
            ("work", "path"): lambda: str(self.work_path(name)),
            ("kernel", "rootPath"): lambda: str(self.root),
            ("iot", "thingName"): lambda: self.thing_name,
        }
        getter = values.get((namespace, key))
        return getter() if getter else None

    def interpolate(self, value: Any, component: BuiltComponent, services: Mapping[str, Service]) -> Any:
        """KernelConfigResolver.interpolate over a lifecycle (maps and lists recursively)."""
        if isinstance(value, Mapping):
            return {k: self.interpolate(v, component, services) for k, v in value.items()}
        if isinstance(value, list):
            return [self.interpolate(v, component, services) for v in value]
        if not isinstance(value, str):
            return value
        text = value
        # Same-component placeholders are found in the original text; each replacement replaces every
        # occurrence of that placeholder.
        for match in SAME_COMPONENT.finditer(value):
            namespace, key = match.group(1), match.group(2)
            if namespace == "configuration":
                node = json_pointer(services[component.name].configuration, key)
                replacement = None if node is MISSING else jackson_text(node)
            else:
                replacement = self._system_parameter(component.name, component.version, namespace, key)
            if replacement is not None:
                text = text.replace(match.group(0), replacement)
        # Cross-component placeholders are then looked for in the result, and only for direct dependencies.
        for match in CROSS_COMPONENT.finditer(text):
            target, namespace, key = match.groups()
            if target not in component.dependencies or target not in services:
                continue
            if namespace == "configuration":
                node = json_pointer(services[target].configuration, key)
                replacement = None if node is MISSING else jackson_text(node)
            else:
                version = services[target].component.version
                replacement = self._system_parameter(target, version, namespace, key)
            if replacement is not None:
                text = text.replace(match.group(0), replacement)
        return text

    # processes
    def environment(self, name: str, step: Any) -> dict[str, str]:
        """The nucleus's Exec environment: its PATH and HOME, ShellRunner's variables, the root Setenv,
        then the lifecycle's and the step's Setenv (later wins)."""
        token = self.svcuid(name)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/")}
        env.update({
            "SVCUID": token,
            "AWS_CONTAINER_AUTHORIZATION_TOKEN": token,
            "GG_ROOT_CA_PATH": str(self.root / "rootCA.pem"),
            "AWS_IOT_THING_NAME": self.thing_name,
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
            "GGC_VERSION": NUCLEUS_VERSION,
            "AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT": str(self.socket_path),
            "AWS_CONTAINER_CREDENTIALS_FULL_URI": "http://localhost:0/2016-11-01/credentialprovider/",
        })
        env.update(self.extra_env)
        for scope in (self.services[name].lifecycle, step if isinstance(step, Mapping) else None):
            setenv = get(scope, "Setenv") or {}
            env.update({str(k): jackson_text(v) for k, v in setenv.items()})
        return env

    def _step(self, name: str, step_name: str) -> Any:
        if name not in self.services:
            raise HarnessError(f"{name} is not deployed")
        return get(self.services[name].lifecycle, step_name)

    def _skip(self, step: Any, env: Mapping[str, str]) -> bool:
        expression = str(get(step, "SkipIf", "") or "").strip() if isinstance(step, Mapping) else ""
        if not expression:
            return False
        negate = expression.startswith("!")
        match = re.fullmatch(r"(onpath|exists)\s+(.+)", expression.lstrip("!").strip())
        if not match:
            raise HarnessError(f"invalid SkipIf {expression!r}")
        if match.group(1) == "onpath":
            found = shutil.which(match.group(2), path=env.get("PATH")) is not None
        else:
            found = Path(match.group(2)).expanduser().exists()
        return found != negate

    def run_step(self, name: str, step_name: str) -> StepResult:
        """Run Bootstrap, Install, Startup or Shutdown to completion (within its Timeout)."""
        step = self._step(name, step_name)
        if step is None:
            return StepResult(step_name, None)
        env = self.environment(name, step)
        if self._skip(step, env):
            return StepResult(step_name, None, "skipped (SkipIf)")
        script = str(get(step, "Script") if isinstance(step, Mapping) else step)
        timeout = float(get(step, "Timeout", DEFAULT_STEP_TIMEOUT) if isinstance(step, Mapping)
                        else DEFAULT_STEP_TIMEOUT)
        wrapper = self.install_wrapper if step_name in ("Bootstrap", "Install") else []
        process = subprocess.Popen([*wrapper, "sh", "-c", script], cwd=self.work_path(name), env=env,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            output, _ = process.communicate(timeout=timeout)
            result = StepResult(step_name, process.returncode, output.decode(errors="replace"))
        except subprocess.TimeoutExpired:
            _terminate(process, grace=5.0)
            output, _ = process.communicate()
            result = StepResult(step_name, process.returncode, output.decode(errors="replace"), timed_out=True)
        with self.log_path(name).open("a", encoding="utf-8") as log:
            log.write(f"--- {step_name} (exit {result.returncode}) ---\n{result.output}")
        return result

    def install(self, name: str) -> StepResult:
        """Bootstrap (if any) then Install, as a deployment does; the first failing step is returned."""
        for step_name in ("Bootstrap", "Install"):
            result = self.run_step(name, step_name)
            if not result.ok:
                with self._lock:
                    self._errored(name)
                return result
        with self._lock:
            self._set_state(name, "INSTALLED")
        return result

    def start(self, name: str) -> subprocess.Popen[bytes]:
        """Start the component in the background, its output appended to logs/<name>.log: its Startup step if
        it has one (the nucleus then never runs Run), else its Run step."""
        self.start_ipc()  # up before any component could connect
        service = self.services[name]
        if service.process is not None and service.process.poll() is None:
            raise HarnessError(f"{name} is already running")
        step_name = "Startup" if self._step(name, "Startup") is not None else "Run"
        step = self._step(name, step_name)
        if step is None:
            raise HarnessError(f"{name} has no Run step")
        env = self.environment(name, step)
        script = str(get(step, "Script") if isinstance(step, Mapping) else step)
        with self._lock:
            service.log = self.log_path(name).open("ab")
            service.run_log_start = service.log.tell()
            service.log.write(f"--- {step_name} ---\n".encode())
            service.log.flush()
            service.generation += 1
            generation = service.generation
            self._set_state(name, "STARTING")
            service.process = subprocess.Popen(["sh", "-c", script], cwd=self.work_path(name), env=env,
                                               stdout=service.log, stderr=subprocess.STDOUT,
                                               start_new_session=True)
            if step_name == "Run":
                self._report(name, "RUNNING")  # GenericExternalService: RUNNING as soon as Run's process exists
            else:
                timeout = float(get(step, "Timeout", DEFAULT_STEP_TIMEOUT) if isinstance(step, Mapping)
                                else DEFAULT_STEP_TIMEOUT)
                timer = threading.Timer(timeout, self._startup_timed_out, (name, generation))
                timer.daemon = True
                timer.start()
        threading.Thread(target=self._watch, args=(name, service.process, generation, step_name),
                         name=f"watch-{name}", daemon=True).start()
        return service.process

    def start_all(self, dependency_timeout: float = 30.0) -> list[str]:
        """Start every deployed component, dependencies first, as the nucleus does: a component waits while a
        HARD dependency is STARTING (up to `dependency_timeout` here) and is not started unless that dependency
        is then RUNNING or FINISHED. A component without Run or Startup is FINISHED at once. Returns the
        components left waiting (the nucleus would wait for ever), also kept in `self.waiting`."""
        self.waiting = []
        for name in self.startup_order():
            if self._step(name, "Run") is None and self._step(name, "Startup") is None:
                with self._lock:
                    self._report(name, "FINISHED")  # GenericExternalService: nothing done
                continue
            dependencies = self.services[name].component.dependencies
            hard = [d for d, spec in dependencies.items()
                    if str(get(spec, "DependencyType", "HARD") or "HARD").upper() == "HARD" and d != NUCLEUS]
            if all(self._dependency_ready(d, dependency_timeout) for d in hard):
                self.start(name)
            else:
                self.waiting.append(name)
        return self.waiting

    def _dependency_ready(self, name: str, timeout: float) -> bool:
        with self._state_changed:
            self._state_changed.wait_for(lambda: self.services[name].state not in ("STARTING", "STOPPING"), timeout)
            return self.services[name].state in ("RUNNING", "FINISHED")

    def startup_order(self) -> list[str]:
        order: list[str] = []

        def visit(name: str, path: tuple[str, ...]) -> None:
            if name in order:
                return
            if name in path:
                raise HarnessError(f"dependency cycle: {' -> '.join((*path, name))}")
            for dependency in self.services[name].component.dependencies:
                if dependency != NUCLEUS:  # the nucleus itself, always there
                    visit(dependency, (*path, name))
            order.append(name)

        for name in sorted(self.services):
            visit(name, ())
        return order

    def stop(self, name: str, grace: float = 5.0) -> int | None:
        """SIGTERM, then SIGKILL after `grace` seconds; returns the Run process's exit code."""
        with self._lock:
            service = self.services.get(name)
            process = service.process if service else None
            if service is None or process is None:
                return None
            service.generation += 1  # its exit is ours, not an error
            if service.state != "BROKEN":
                self._set_state(name, "STOPPING")
        code = _terminate(process, grace)  # outside the lock: a stopping component may still call us over IPC
        with self._lock:
            if service.process is process:  # not already done by a concurrent stop
                service.process = None
                if service.log is not None:
                    service.log.close()
                    service.log = None
            if service.state == "STOPPING":
                self._set_state(name, "FINISHED")
        return code

    def stop_all(self, grace: float = 5.0) -> dict[str, int | None]:
        return {name: self.stop(name, grace) for name in reversed(self.startup_order())}

    def close(self) -> None:
        """Stop every component and the IPC server."""
        self.stop_all()
        if self._ipc is not None:
            self._ipc.stop()
            self._ipc = None

    def running(self, name: str) -> bool:
        process = self.services[name].process if name in self.services else None
        return process is not None and process.poll() is None

    # IPC: the server, and what it asks of the nucleus
    @property
    def ipc(self) -> IpcServer:
        """The IPC server, started on first use (the real one is up before any component runs)."""
        return self.start_ipc()

    def start_ipc(self) -> IpcServer:
        with self._lock:
            if self._ipc is None:
                self._ipc = IpcServer(self.socket_path, self)
                self._ipc.start()
            return self._ipc

    def svcuid(self, name: str) -> str:
        """The component's IPC token (SVCUID), e.g. for a test that speaks IPC as that component."""
        with self._lock:
            return self._svcuid.setdefault(name, secrets.token_urlsafe(16))

    def component_for_token(self, token: str) -> str | None:
        with self._lock:
            return next((name for name, known in self._svcuid.items()
                         if name in self.services and secrets.compare_digest(known, token)), None)

    def configuration_of(self, component: str) -> dict[str, Any] | None:
        with self._lock:
            service = self.services.get(component)
            return copy.deepcopy(service.configuration) if service else None

    def report_state(self, component: str, state: str) -> None:
        """UpdateState: allowed only from the states Lifecycle allows it from; anything else is ignored."""
        with self._lock:
            service = self.services[component]
            if state not in ALLOWED_REPORTS.get(service.state, set()):
                self.ignored_reports.append((component, service.state, state))
                return
            if state == "ERRORED":
                self._errored(component)
            else:
                self._report(component, state)

    # lifecycle states
    def state(self, name: str) -> str:
        with self._lock:
            return self.services[name].state

    def wait_for_state(self, name: str, *states: str, timeout: float = 30.0) -> str:
        """Block until the component is in one of `states`; its state then."""
        with self._state_changed:
            if not self._state_changed.wait_for(lambda: self.services[name].state in states, timeout):
                raise TimeoutError(f"{name} did not reach {states} in {timeout} s: {self.history.get(name)}")
            return self.services[name].state

    def _set_state(self, name: str, state: str) -> None:
        self.services[name].state = state
        self.history.setdefault(name, []).append(state)
        self._state_changed.notify_all()

    def _report(self, name: str, state: str) -> None:
        # A state other than ERRORED clears the error count of the state it is reported in (Lifecycle).
        service = self.services[name]
        service.errors.pop(service.state, None)
        self._set_state(name, state)

    def _errored(self, name: str) -> None:
        service = self.services[name]
        if service.state in ("NEW", "STARTING", "RUNNING"):
            times = service.errors.setdefault(service.state, [])
            now = time.monotonic()
            if times and now - times[-1] >= ERROR_RESET_TIME:
                times.clear()
            times.append(now)
            if len(times) >= MAXIMUM_CONTINUAL_ERROR:
                self._set_state(name, "BROKEN")
                self._in_background(self.stop, name)  # the nucleus stops a BROKEN component for good
                return
        self._set_state(name, "ERRORED")
        if self.supervise:
            self._in_background(self._restart, name, service.generation)

    def _in_background(self, function: Any, *args: Any) -> None:
        # Never from an IPC or watcher thread: stopping waits for the process, which may wait for us.
        threading.Thread(target=function, args=args, daemon=True).start()

    def _restart(self, name: str, generation: int) -> None:
        service = self.services.get(name)
        if service is None or service.generation != generation:
            return
        self.stop(name)
        if self.services.get(name) is service:
            self.start(name)

    def _watch(self, name: str, process: subprocess.Popen[bytes], generation: int, step_name: str) -> None:
        code = process.wait()
        with self._lock:
            service = self.services.get(name)
            if service is None or service.generation != generation:
                return  # stopped on purpose, or already restarted
            if step_name == "Startup":
                if code == 0 and service.state == "STARTING":
                    self._report(name, "RUNNING")
                elif code != 0 and service.state in ("STARTING", "RUNNING"):
                    self._errored(name)
            elif service.state == "RUNNING":
                if code == 0:
                    self._report(name, "FINISHED")
                else:
                    self._errored(name)

    def _startup_timed_out(self, name: str, generation: int) -> None:
        with self._lock:
            service = self.services.get(name)
            if service is not None and service.generation == generation and service.state == "STARTING":
                self._errored(name)


def read_from(path: Path, offset: int) -> str:
    """A log's text from a byte offset on (empty while the file does not exist)."""
    if not path.exists():
        return ""
    with path.open("rb") as log:
        log.seek(offset)
        return log.read().decode("utf-8", errors="replace")


def _terminate(process: subprocess.Popen[bytes], grace: float) -> int | None:
    if process.poll() is None:
        _signal_group(process, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        if process.poll() is None:
            _signal_group(process, signal.SIGKILL)
    try:
        return process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        return None


def _signal_group(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    # Each step runs in its own session, so its process group is exactly the process and its children.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, sig)
