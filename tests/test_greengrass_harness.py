"""The nucleus stand-in itself: interpolation, configuration merge, manifest and lifecycle selection, and the
way it runs and stops lifecycle steps."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from .greengrass_harness import (
    MISSING,
    BuiltComponent,
    ConfigurationUpdate,
    HarnessError,
    Nucleus,
    jackson_text,
    java_double,
    json_pointer,
    merge_configuration,
    resolve_lifecycle,
    select_manifest,
)


def component(name: str, lifecycle: dict[str, Any] | None = None, defaults: dict[str, Any] | None = None,
              *, dependencies: dict[str, Any] | None = None) -> BuiltComponent:
    recipe: dict[str, Any] = {
        "RecipeFormatVersion": "2020-01-25", "ComponentName": name, "ComponentVersion": "1.0.0",
        "ComponentConfiguration": {"DefaultConfiguration": defaults or {}},
        "Manifests": [{"Platform": {"os": "linux"}}],
    }
    if lifecycle is not None:
        recipe["Lifecycle"] = lifecycle
    if dependencies:
        recipe["ComponentDependencies"] = dependencies
    return BuiltComponent(recipe, Path("/nonexistent"))


@pytest.mark.unit
@pytest.mark.parametrize(("value", "text"), [
    (0.7, "0.7"), (15.0, "15.0"), (-2.5, "-2.5"), (0.001, "0.001"), (1e-05, "1.0E-5"), (1e7, "1.0E7"),
    (12345678.9, "1.23456789E7"), (9999999.0, "9999999.0"), (0.0, "0.0"), (604800.0, "604800.0"),
    (1.5e-10, "1.5E-10"),
])
def test_java_double(value: float, text: str) -> None:
    assert java_double(value) == text


@pytest.mark.unit
def test_jackson_text_of_values_and_containers() -> None:
    assert jackson_text("plain text") == "plain text"
    assert jackson_text(True) == "true"
    assert jackson_text(None) == "null"
    assert jackson_text(42) == "42"
    assert jackson_text(0.5) == "0.5"
    # Containers: compact JSON, keys sorted (the nucleus's mapper orders map entries by key).
    assert jackson_text({"b": 1, "a": [True, None, "x\"y"], "c": {"z": 1.0, "y": "caf\u00e9"}}) == (
        '{"a":[true,null,"x\\"y"],"b":1,"c":{"y":"caf\u00e9","z":1.0}}')


@pytest.mark.unit
def test_json_pointer_like_jackson() -> None:
    doc = {"a": {"b": 1}, "list": [10, 20], "a/b": "slash", "t~": "tilde", "": "empty"}
    assert json_pointer(doc, "") == doc
    assert json_pointer(doc, "/a/b") == 1
    assert json_pointer(doc, "/list/1") == 20
    assert json_pointer(doc, "/list/01") is MISSING
    assert json_pointer(doc, "/list/2") is MISSING
    assert json_pointer(doc, "/a~1b") == "slash"
    assert json_pointer(doc, "/t~0") == "tilde"
    assert json_pointer(doc, "/") == "empty"
    assert json_pointer(doc, "/a/b/c") is MISSING
    with pytest.raises(HarnessError):
        json_pointer(doc, "a")


@pytest.mark.unit
def test_merge_fills_defaults_and_replaces_leaves_and_lists() -> None:
    defaults = {"a": 1, "nested": {"x": 1, "y": [1, 2]}, "keep": "default"}
    update = ConfigurationUpdate(merge={"nested": {"y": [3]}, "new": {"k": "v"}})
    assert merge_configuration(defaults, update) == {
        "a": 1, "nested": {"x": 1, "y": [3]}, "keep": "default", "new": {"k": "v"}}


@pytest.mark.unit
def test_merged_values_survive_later_deployments_until_reset() -> None:
    defaults = {"a": 1, "nested": {"x": 1, "y": 2}}
    first = merge_configuration(defaults, ConfigurationUpdate(merge={"a": 5, "nested": {"x": 9}}))
    # A deployment without an update keeps what an earlier one merged: defaults never overwrite.
    assert merge_configuration(defaults, None, running=first) == {"a": 5, "nested": {"x": 9, "y": 2}}
    reset_x = merge_configuration(defaults, ConfigurationUpdate(reset=["/nested/x"]), running=first)
    assert reset_x == {"a": 5, "nested": {"x": 1, "y": 2}}
    reset_all = merge_configuration(defaults, ConfigurationUpdate(reset=[""], merge={"a": 7}), running=first)
    assert reset_all == {"a": 7, "nested": {"x": 1, "y": 2}}


@pytest.mark.unit
def test_reset_of_an_array_element_is_refused() -> None:
    running = {"list": [1, 2, 3]}
    assert merge_configuration({"list": [0]}, ConfigurationUpdate(reset=["/list/1"]), running) == running


@pytest.mark.unit
def test_manifest_selection_by_platform() -> None:
    recipe = {"ComponentName": "c", "Manifests": [
        {"Platform": {"os": "linux", "architecture": "aarch64"}, "Artifacts": [{"URI": "s3://b/arm"}]},
        {"Platform": {"os": "linux", "architecture": "/amd64|x86/"}, "Artifacts": [{"URI": "s3://b/x86"}]},
        {"Platform": {"os": "windows"}},
    ]}
    assert select_manifest(recipe, {"os": "linux", "architecture": "aarch64"})["Artifacts"][0]["URI"] == "s3://b/arm"
    assert select_manifest(recipe, {"os": "linux", "architecture": "amd64"})["Artifacts"][0]["URI"] == "s3://b/x86"
    assert select_manifest(recipe, {"os": "windows", "architecture": "amd64"})["Platform"] == {"os": "windows"}
    with pytest.raises(HarnessError, match="no manifest"):
        select_manifest(recipe, {"os": "darwin", "architecture": "aarch64"})


@pytest.mark.unit
def test_lifecycle_own_global_or_selected() -> None:
    own = {"Platform": {"os": "linux"}, "Lifecycle": {"Run": "own"}}
    plain = {"Platform": {"os": "linux"}}
    selecting = {"Platform": {"os": "linux"}, "Selections": ["arm"]}
    recipe = {"Manifests": [own, plain, selecting],
              "Lifecycle": {"Install": {"arm": "install arm", "all": "install any"}, "Run": "run"}}
    assert resolve_lifecycle(recipe, own) == {"Run": "own"}
    assert resolve_lifecycle(recipe, plain) == {"Install": "install any", "Run": "run"}
    assert resolve_lifecycle(recipe, selecting) == {"Install": "install arm", "Run": "run"}


def _deploy(tmp_path: Path, *components: BuiltComponent, **updates: ConfigurationUpdate) -> Nucleus:
    nucleus = Nucleus(tmp_path / "gg", thing_name="my-thing")
    nucleus.deploy(components, {name.replace("_", "."): u for name, u in updates.items()})
    return nucleus


@pytest.mark.unit
def test_interpolation_as_the_nucleus_does(tmp_path: Path) -> None:
    lifecycle = {"Setenv": {
        "VALUE": "{configuration:/a}", "OBJECT": "{configuration:/obj}",
        "TWICE": "{configuration:/a}-{configuration:/a}",
        "MISSING": "{configuration:/nope}", "UNKNOWN": "{foo:bar}", "BAD_KEY": "{artifacts:nope}",
        "PATHS": "{artifacts:path}|{artifacts:decompressedPath}|{work:path}|{kernel:rootPath}|{iot:thingName}",
        "DEP": "{dep:configuration:/port}", "DEP_PATH": "{dep:work:path}", "NOT_DEP": "{other:configuration:/x}",
    }}
    app = component("app", lifecycle, {"a": 1.5, "obj": {"k": "v", "b": [1]}},
                    dependencies={"dep": {"VersionRequirement": ">=1.0.0"}})
    nucleus = _deploy(tmp_path, app, component("dep", {}, {"port": 1883}), component("other", {}, {"x": 1}))
    env = nucleus.services["app"].lifecycle["Setenv"]
    root = nucleus.root
    assert env["VALUE"] == "1.5"
    assert env["OBJECT"] == '{"b":[1],"k":"v"}'
    assert env["TWICE"] == "1.5-1.5"
    assert env["MISSING"] == "{configuration:/nope}"
    assert env["UNKNOWN"] == "{foo:bar}" and env["BAD_KEY"] == "{artifacts:nope}"
    assert env["PATHS"] == (f"{root}/packages/artifacts/app/1.0.0|{root}/packages/artifacts-unarchived/app/1.0.0|"
                            f"{root}/work/app|{root}|my-thing")
    assert env["DEP"] == "1883" and env["DEP_PATH"] == f"{root}/work/dep"
    assert env["NOT_DEP"] == "{other:configuration:/x}"  # only direct dependencies


@pytest.mark.unit
def test_redeploy_reports_the_components_whose_lifecycle_changed(tmp_path: Path) -> None:
    app = component("app", {"Setenv": {"A": "{configuration:/a}"}, "Run": "true"}, {"a": 1, "b": 2})
    side = component("side", {"Run": "true"})
    nucleus = Nucleus(tmp_path / "gg")
    assert nucleus.deploy([app, side]) == {"app", "side"}
    assert nucleus.deploy([app, side]) == set()
    # b is not in the lifecycle text: the nucleus would not restart the component for it.
    assert nucleus.deploy([app, side], {"app": ConfigurationUpdate(merge={"b": 3})}) == set()
    assert nucleus.deploy([app, side], {"app": ConfigurationUpdate(merge={"a": 3})}) == {"app"}
    assert nucleus.services["app"].configuration == {"a": 3, "b": 3}


@pytest.mark.unit
def test_a_deployment_must_contain_the_dependencies(tmp_path: Path) -> None:
    app = component("app", {}, dependencies={"dep": {"VersionRequirement": ">=1.0.0"}})
    with pytest.raises(HarnessError, match="depends on"):
        Nucleus(tmp_path / "gg").deploy([app])
    with pytest.raises(HarnessError, match="not in the deployment"):
        Nucleus(tmp_path / "gg").deploy([component("dep")], {"app": ConfigurationUpdate(merge={})})


@pytest.mark.unit
def test_startup_order_puts_dependencies_first(tmp_path: Path) -> None:
    dep = {"VersionRequirement": ">=1.0.0"}
    nucleus = _deploy(tmp_path, component("a", dependencies={"c": dep}), component("b", dependencies={"a": dep}),
                      component("c"))
    assert nucleus.startup_order() == ["c", "a", "b"]


@pytest.mark.unit
def test_environment_layers(tmp_path: Path) -> None:
    lifecycle = {"Setenv": {"SHARED": "lifecycle", "ONLY_LIFECYCLE": "1", "AWS_REGION": "from-recipe"},
                 "Install": {"Setenv": {"SHARED": "step"}, "Script": "true"}}
    nucleus = Nucleus(tmp_path / "gg", thing_name="t1", extra_env={"EXTRA": "x", "SHARED": "extra"})
    nucleus.deploy([component("app", lifecycle)])
    env = nucleus.environment("app", nucleus.services["app"].lifecycle["Install"])
    assert env["SHARED"] == "step" and env["ONLY_LIFECYCLE"] == "1" and env["EXTRA"] == "x"
    assert env["AWS_REGION"] == "from-recipe" and env["AWS_IOT_THING_NAME"] == "t1"
    assert env["SVCUID"] and env["SVCUID"] == env["AWS_CONTAINER_AUTHORIZATION_TOKEN"]
    assert "PATH" in env and "GG_ROOT_CA_PATH" in env


@pytest.mark.integration
def test_steps_run_in_the_work_folder_with_timeout_and_skipif(tmp_path: Path) -> None:
    lifecycle = {
        "Setenv": {"GREETING": "{configuration:/greeting}"},
        "Bootstrap": {"SkipIf": "onpath sh", "Script": "exit 1"},
        "Install": {"Timeout": 30, "Script": 'pwd > where.txt && echo "$GREETING from $AWS_IOT_THING_NAME"'},
        "Startup": {"Timeout": 1, "Script": "sleep 30"},
        "Shutdown": "exit 3",
    }
    nucleus = _deploy(tmp_path, component("app", lifecycle, {"greeting": "hello"}))
    install = nucleus.install("app")
    assert install.ok and install.output.strip() == "hello from my-thing"
    assert (nucleus.work_path("app") / "where.txt").read_text().strip() == str(nucleus.work_path("app"))
    assert nucleus.run_step("app", "Bootstrap").returncode is None  # skipped: sh is on PATH
    started = time.monotonic()
    startup = nucleus.run_step("app", "Startup")
    assert startup.timed_out and not startup.ok and time.monotonic() - started < 15
    assert nucleus.run_step("app", "Shutdown").returncode == 3
    assert "hello from my-thing" in nucleus.log_text("app")


@pytest.mark.integration
def test_the_log_keeps_every_run_and_run_log_text_only_the_latest(tmp_path: Path) -> None:
    nucleus = _deploy(tmp_path, component("app", {"Run": 'echo "run of {configuration:/n}"'}, {"n": "one"}))
    assert nucleus.start("app").wait(timeout=10) == 0
    nucleus.deploy([component("app", {"Run": 'echo "run of {configuration:/n}"'}, {"n": "one"})],
                   {"app": ConfigurationUpdate(merge={"n": "two"})})
    assert nucleus.start("app").wait(timeout=10) == 0
    nucleus.stop("app")
    assert "run of one" in nucleus.log_text("app") and "run of two" in nucleus.log_text("app")
    assert "run of two" in nucleus.run_log_text("app") and "run of one" not in nucleus.run_log_text("app")


@pytest.mark.integration
def test_stop_sends_sigterm_then_sigkill(tmp_path: Path) -> None:
    graceful = component("graceful", {"Run": "trap 'exit 0' TERM; while true; do sleep 0.1; done"})
    stubborn = component("stubborn", {"Run": "trap '' TERM; while true; do sleep 0.1; done"})
    nucleus = _deploy(tmp_path, graceful, stubborn)
    nucleus.start_all()
    time.sleep(0.5)
    assert nucleus.running("graceful") and nucleus.running("stubborn")
    assert nucleus.stop("graceful", grace=5) == 0
    started = time.monotonic()
    assert nucleus.stop("stubborn", grace=0.5) == -9
    assert time.monotonic() - started < 5
    assert not nucleus.running("stubborn")


@pytest.mark.integration
def test_lifecycle_states_of_run_steps(tmp_path: Path) -> None:
    nucleus = Nucleus(tmp_path / "gg")
    try:
        nucleus.deploy([component("done", {"Run": "exit 0"}), component("crash", {"Run": "exit 3"}),
                        component("long", {"Run": "sleep 60"})])
        for name in ("done", "crash", "long"):
            nucleus.start(name)
        assert nucleus.wait_for_state("done", "FINISHED", "ERRORED") == "FINISHED"
        assert nucleus.wait_for_state("crash", "FINISHED", "ERRORED") == "ERRORED"
        time.sleep(0.3)
        assert nucleus.history["crash"] == ["STARTING", "RUNNING", "ERRORED"]  # not supervised: no restart
        # A Run step is RUNNING from its start, so a component's own RUNNING report is ignored, as the
        # nucleus ignores it; ERRORED is taken.
        assert nucleus.state("long") == "RUNNING"
        nucleus.report_state("long", "RUNNING")
        assert nucleus.ignored_reports == [("long", "RUNNING", "RUNNING")]
        nucleus.report_state("long", "ERRORED")
        assert nucleus.state("long") == "ERRORED"
    finally:
        nucleus.close()


@pytest.mark.integration
def test_supervised_crash_loop_ends_broken_after_three_errors(tmp_path: Path) -> None:
    nucleus = Nucleus(tmp_path / "gg", supervise=True)
    try:
        nucleus.deploy([component("crash", {"Run": "echo started; exit 3"})])
        nucleus.start("crash")
        assert nucleus.wait_for_state("crash", "BROKEN") == "BROKEN"
        assert [s for s in nucleus.history["crash"] if s in ("RUNNING", "ERRORED", "BROKEN")] == [
            "RUNNING", "ERRORED", "RUNNING", "ERRORED", "RUNNING", "BROKEN"]
        assert nucleus.log_text("crash").count("started") == 3
    finally:
        nucleus.close()


@pytest.mark.integration
def test_start_all_holds_back_dependants_of_a_failed_hard_dependency(tmp_path: Path) -> None:
    nucleus = Nucleus(tmp_path / "gg")
    try:
        broker = component("broker", {"Startup": {"Script": "exit 1"}})
        hard = component("hard", {"Run": "sleep 60"}, dependencies={"broker": {"DependencyType": "HARD"}})
        soft = component("soft", {"Run": "sleep 60"}, dependencies={"broker": {"DependencyType": "SOFT"}})
        bundle = component("bundle", dependencies={"hard": {}, "soft": {"DependencyType": "SOFT"}})
        nucleus.deploy([broker, hard, soft, bundle])
        assert nucleus.start_all(dependency_timeout=10) == ["hard"]
        assert nucleus.state("broker") == "ERRORED" and nucleus.running("soft") and not nucleus.running("hard")
        assert nucleus.state("bundle") == "FINISHED"  # no process: FINISHED, whatever its dependencies do
    finally:
        nucleus.close()
