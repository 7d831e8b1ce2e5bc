#!/usr/bin/env python3
"""Refresh the pinned, hashed dependency locks of the edge components: components/locks/<component>-<target>.txt.

    python3 components/lock.py                       # every component, every target
    python3 components/lock.py --targets linux-aarch64-cp310

For each component and each target of components/build.py (TARGETS) it lets pip resolve, for that target's
platform and Python, the requirements the device needs: facecap's dependencies from pyproject.toml, the
component's pip extra (FaceDetector: `detector`) and awsiotsdk, which is taken without its dependencies
because it pins an older awscrt than facecap needs (docs/greengrass.md, "awsiotsdk and awscrt"). It then
hashes the downloaded wheels and writes one line per wheel:

    name==version --hash=sha256:<hex>  # <wheel file> [<extra>]

The file name lets the build find the wheel in its cache without the network; `[<extra>]` marks what only
the extra needs, which Install leaves out when FaceDetector uses the system's OpenCV; `[installer]` marks
pip, which Install runs from its wheel and does not install. The locks describe
PyPI itself: pip runs with --isolated, so no local mirror or pip.conf of this machine leaks into them.
Needs Python >= 3.11 (tomllib) and the package index; standard library only otherwise.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
# Installed with --no-deps: its only dependency, awscrt, is pinned by facecap's own requirement.
NO_DEPS = ("awsiotsdk==1.31.0",)
# pip itself, run from its wheel to install the others: the venv is made without pip (faster, and the device
# needs no ensurepip). Marked [installer]: it goes into the wheelhouse but not into the venv.
INSTALLER = "pip"
INSTALLER_MARK = "installer"
# Which pip extra each edge component's Install adds (the `extra` of src/facecap/packaging/components.py;
# a test checks that the two agree).
COMPONENT_EXTRAS: dict[str, str | None] = {
    "com.facecap.EdgeBroker": None,
    "com.facecap.FaceDetector": "detector",
    "com.facecap.FaceLogger": None,
}
WHEEL_NAME = re.compile(r"^(?P<name>[^-]+)-(?P<version>[^-]+)-")


def _load_build() -> ModuleType:
    spec = importlib.util.spec_from_file_location("facecap_build", HERE / "build.py")
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {HERE / 'build.py'}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


BUILD = _load_build()


def requirements(extra: str | None) -> list[str]:
    """facecap's dependencies and those of `extra`, as pyproject.toml states them."""
    tomllib: Any = importlib.import_module("tomllib")  # Python >= 3.11
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    wanted = list(project["dependencies"])
    if extra:
        wanted += project["optional-dependencies"][extra]
    return wanted


def download(target: Any, wanted: list[str], dest: Path, *, deps: bool = True) -> dict[str, Path]:
    """pip's resolution of `wanted` for the target: normalised project name -> wheel file."""
    command = [sys.executable, "-m", "pip", "--isolated", "download", "--no-input", "--disable-pip-version-check",
               *target.pip_options(), "--dest", str(dest), *([] if deps else ["--no-deps"]), *wanted]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return {normalise(path.name): path for path in dest.glob("*.whl")}


def normalise(wheel_file: str) -> str:
    match = WHEEL_NAME.match(wheel_file)
    if match is None:
        raise ValueError(f"not a wheel file name: {wheel_file}")
    return re.sub(r"[-_.]+", "-", match.group("name")).lower()


def lock_lines(target: Any, extra: str | None, scratch: Path) -> list[str]:
    base = download(target, requirements(None), scratch / "base")
    full = download(target, requirements(extra), scratch / "full") if extra else base
    no_deps = download(target, list(NO_DEPS), scratch / "no-deps", deps=False)
    installer = download(target, [INSTALLER], scratch / "installer", deps=False)
    full = {**full, **no_deps, **installer}
    lines = []
    for name, path in sorted(full.items()):
        version = WHEEL_NAME.match(path.name).group("version")  # type: ignore[union-attr]
        marker = ""
        if name in installer:
            marker = f" [{INSTALLER_MARK}]"
        elif extra and name not in base and name not in no_deps:
            marker = f" [{extra}]"
        lines.append(f"{name}=={version} --hash=sha256:{BUILD.sha256_of(path)}  # {path.name}{marker}")
    return lines


def write_lock(component: str, target: Any, lines: list[str]) -> Path:
    path: Path = BUILD.lock_path(component, target)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = [f"# {component} on {target.name} (Python {target.python}, glibc >= {target.glibc}): pinned and hashed",
              "# wheels for `pip install --no-index --require-hashes --no-deps`. Generated by `python3 "
              "components/lock.py`; do not edit."]
    path.write_text("\n".join(header + lines) + "\n", encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--targets", help="comma-separated target names (default: all)")
    args = parser.parse_args(argv)
    if sys.version_info < (3, 11):
        print("lock.py needs Python >= 3.11 (tomllib)", file=sys.stderr)
        return 1
    for target in BUILD.selected_targets(args.targets):
        resolved: dict[str | None, list[str]] = {}
        for component, extra in COMPONENT_EXTRAS.items():
            if extra not in resolved:
                with tempfile.TemporaryDirectory(prefix="facecap-lock-") as scratch:
                    resolved[extra] = lock_lines(target, extra, Path(scratch))
            print(f"lock.py: wrote {write_lock(component, target, resolved[extra]).relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
