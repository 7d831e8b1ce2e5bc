"""The layout rules of docs/architecture.md that a refactor could quietly break: runtime code never imports
the development kit or the build tooling (the device wheel leaves them out), and every component has its
command module and one runner class."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src"
# Not in the device wheel (components/build.py DEVICE_EXCLUDES): only these may import them.
TOOLING = ("facecap.devkit", "facecap.packaging", "facecap.commands.demo")
COMPONENTS = {"broker": "EdgeBrokerRunner", "logger": "FaceLoggerRunner", "processor": "ProcessorRunner",
              "detector": "DetectorRunner"}

pytestmark = pytest.mark.unit


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, relative imports resolved to absolute names."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                prefix = ".".join(base)
                module = f"{prefix}.{node.module}" if node.module else prefix
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def is_tooling(module: str) -> bool:
    return any(module == t or module.startswith(t + ".") for t in TOOLING)


def test_runtime_code_never_imports_the_devkit_or_packaging() -> None:
    runtime = [p for p in sorted(SRC.rglob("*.py")) if not is_tooling(module_name(p))]
    assert len(runtime) > 30 and any(module_name(p) == "facecap.detector.runner" for p in runtime)
    offending = {module_name(p): sorted(m for m in imported_modules(p) if is_tooling(m)) for p in runtime}
    assert {name: modules for name, modules in offending.items() if modules} == {}


def test_the_import_check_sees_relative_imports() -> None:
    # The demo command imports the devkit with a relative import: the check must resolve it.
    demo = SRC / "facecap" / "commands" / "demo.py"
    assert "facecap.devkit.demo.runner" in imported_modules(demo)


@pytest.mark.parametrize("component", sorted(COMPONENTS))
def test_each_component_has_a_command_module_and_one_runner_class(component: str) -> None:
    command = importlib.import_module(f"facecap.commands.{component}")
    assert callable(command.register) and callable(command.run)
    runner = SRC / "facecap" / component / "runner.py"
    tree = ast.parse(runner.read_text(encoding="utf-8"))
    classes = [node.name for node in tree.body if isinstance(node, ast.ClassDef)]
    assert [name for name in classes if name.endswith("Runner")] == [COMPONENTS[component]]


def test_a_runner_builds_without_a_broker() -> None:
    """The FaceLogger runner with a client that never connects: its handler logs a face all the same."""
    from facecap.logger.config import LoggerConfig
    from facecap.logger.runner import FaceLoggerRunner
    from facecap.mqtt import MqttClient, MqttSettings, ReceivedMessage

    from .support.helpers import sample_face

    client = MqttClient(MqttSettings(host="127.0.0.1", port=9), "never-started")
    runner = FaceLoggerRunner(LoggerConfig(), client=client)
    assert runner.client is client
    face = sample_face()
    runner.handle(ReceivedMessage(face.topic, face.payload, face.content_type, face.user_properties, qos=1,
                                  retain=False))
    runner.handle(ReceivedMessage(face.topic, b"not an image", None, (), qos=1, retain=False))
    assert (runner.facelog.total_faces, runner.facelog.total_rejected) == (1, 1)


MAX_FUNCTION_LINES = 50  # docs/architecture.md: split a longer function by step


def long_functions(root: Path, limit: int) -> list[str]:
    found = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > limit:
                    found.append(f"{path.relative_to(root)}:{node.lineno} {node.name} ({length} lines)")
    return found


def test_no_function_in_src_is_longer_than_the_limit() -> None:
    assert long_functions(SRC, MAX_FUNCTION_LINES) == []


def test_the_length_check_counts_a_function_from_def_to_its_last_line(tmp_path: Path) -> None:
    body = "\n".join(f"    x{n} = {n}" for n in range(3))
    (tmp_path / "m.py").write_text(f"def short():\n    pass\n\n\ndef four():\n{body}\n")
    assert long_functions(tmp_path, 3) == ["m.py:5 four (4 lines)"]
