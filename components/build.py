#!/usr/bin/env python3
"""Build facecap's Greengrass components: the GDK `custom` build of every project in this repository.

The GDK runs it from a project folder (`gdk component build`), and tests run it directly because CI cannot
install the GDK. Standard library only, Python >= 3.10, so it runs under whatever Python the GDK uses.

For the project in the current folder (or --project DIR) it writes what `gdk component publish` expects:

    greengrass-build/recipes/recipe.yaml                    the project's recipe, unchanged
    greengrass-build/artifacts/<name>/<version>/<file>...   one file per s3:// artifact URI of the recipe

The artifacts come from the recipe's URIs (publish rewrites `s3://BUCKET_NAME/COMPONENT_NAME/
COMPONENT_VERSION/<file>` by file name): `facecap-<version>-py3-none-any.whl` is built from this repository
with `pip wheel --no-deps`, and the YuNet model is taken from FACECAP_MODEL_SOURCE (or --model-source) or
downloaded from its pinned URL (or a mirror: FACECAP_MODEL_URL, --model-url); its sha256 is checked either
way.

The wheel is the device wheel: runtime code only. It is built from a staged copy of the sources that leaves
out DEVICE_EXCLUDES (the development kit facecap/devkit/, the build tooling facecap/packaging/ and the demo
command), so a device never carries launchers for test servers or the recipe generator; `facecap demo`
there says in one line that it is part of the development kit. The project itself is unchanged: a checkout
(`pip install -e .`) has everything.

`--all --output DIR` builds every project into one folder laid out for a local deployment
(`greengrass-cli deployment create --recipeDir DIR/recipes --artifactDir DIR/artifacts`).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parent.parent


def _load_release() -> ModuleType:
    """facecap's release facts (model file, version parser), loaded by path: facecap itself may not be
    importable under the GDK's Python, and its package would import pydantic."""
    spec = importlib.util.spec_from_file_location("facecap_release", REPO / "src" / "facecap" / "release.py")
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {REPO / 'src' / 'facecap' / 'release.py'}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


RELEASE = _load_release()
WHEEL_PATTERN = re.compile(r"^facecap-(?P<version>[^-]+)-py3-none-any\.whl$")
MODEL_NAME: str = RELEASE.MODEL_FILE
# The file is a plain git blob at a fixed commit, so the URL and the digest never change.
MODEL_URL = (
    "https://raw.githubusercontent.com/ShiqiYu/libfacedetection.train/"
    "2b5e61dee21441ef4676505f835ab63ee53bae1e/onnx/yunet_s_640_640.onnx"
)
MODEL_SHA256 = "8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4"
MODEL_SOURCE_ENV = "FACECAP_MODEL_SOURCE"
MODEL_URL_ENV = "FACECAP_MODEL_URL"  # a mirror of the same file; the digest is checked all the same
# The files a wheel is built from; everything else in the repository stays out of the build.
WHEEL_INPUTS = ("pyproject.toml", "README.md", "LICENSE", "NOTICE", "src")
# Development tooling under src/ that the device wheel leaves out (paths relative to src/).
DEVICE_EXCLUDES = ("facecap/devkit", "facecap/packaging", "facecap/commands/demo.py")


class BuildError(Exception):
    """A build that cannot succeed; the message says what to fix."""


@dataclass(frozen=True)
class Project:
    folder: Path
    name: str
    version: str
    recipe: Path
    artifacts: tuple[str, ...]  # file names, in recipe order

    @property
    def wants_wheel(self) -> bool:
        return any(WHEEL_PATTERN.match(a) for a in self.artifacts)


def load_project(folder: Path) -> Project:
    """Read a GDK project: gdk-config.json (exactly one component) and the recipe.yaml beside it."""
    config_file = folder / "gdk-config.json"
    recipe = folder / "recipe.yaml"
    if not config_file.is_file():
        raise BuildError(f"{folder}: no gdk-config.json (run from a component folder or pass --project)")
    if not recipe.is_file():
        raise BuildError(f"{folder}: no recipe.yaml")
    config = json.loads(config_file.read_text(encoding="utf-8"))
    components = config.get("component", {})
    if len(components) != 1:
        raise BuildError(f"{config_file}: the GDK builds exactly one component, found {len(components)}")
    name, settings = next(iter(components.items()))
    version = str(settings.get("version", ""))
    text = recipe.read_text(encoding="utf-8")
    _expect_field(recipe, text, "ComponentName", name)
    if version != "NEXT_PATCH":  # publish computes NEXT_PATCH and writes it into the recipe itself
        _expect_field(recipe, text, "ComponentVersion", version)
    uris = re.findall(r"""^\s*(?:-\s*)?URI:\s*["']?(s3://[^"'\s]+)""", text, flags=re.MULTILINE | re.IGNORECASE)
    artifacts = tuple(dict.fromkeys(uri.rsplit("/", 1)[-1] for uri in uris))
    return Project(folder=folder, name=name, version=version, recipe=recipe, artifacts=artifacts)


def _expect_field(recipe: Path, text: str, field: str, expected: str) -> None:
    match = re.search(rf"""^{field}:\s*["']?([^"'\s#]+)""", text, flags=re.MULTILINE)
    found = match.group(1) if match else None
    if found != expected:
        raise BuildError(f"{recipe}: {field} is {found!r} but gdk-config.json says {expected!r} "
                         "(run `python -m facecap.packaging sync`)")


def project_version() -> str:
    """The facecap version in pyproject.toml."""
    try:
        version: str = RELEASE.project_version(REPO)
    except ValueError as exc:
        raise BuildError(str(exc)) from None
    return version


def _build_backend_available() -> bool:
    """True when this interpreter has what pyproject's [build-system] asks for, so pip can build without
    fetching setuptools into an isolated environment (which needs the package index)."""
    from importlib.metadata import version

    text = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    wanted = re.search(r'"setuptools>=(\d+)', text)
    try:
        installed = int(version("setuptools").split(".")[0])
        version("wheel")
    except (ImportError, LookupError, ValueError):  # not installed (PackageNotFoundError), odd version
        return False
    return wanted is None or installed >= int(wanted.group(1))


def _stage_sources(source: Path) -> None:
    """Copy WHEEL_INPUTS into `source`, without caches and without DEVICE_EXCLUDES."""
    source.mkdir()
    leave_out = {(REPO / "src" / path).resolve() for path in DEVICE_EXCLUDES}
    caches = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")

    def ignore(folder: str, names: list[str]) -> set[str]:
        excluded = {name for name in names if (Path(folder) / name).resolve() in leave_out}
        return excluded | set(caches(folder, names))

    for name in WHEEL_INPUTS:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=ignore)
        elif path.is_file():
            shutil.copy2(path, source / name)


def build_wheel(output: Path) -> Path:
    """`pip wheel --no-deps` of a staged copy of the package sources (runtime code only), so the build never
    writes into the working tree (setuptools leaves build/ and *.egg-info behind) and never picks up stray
    files."""
    with tempfile.TemporaryDirectory(prefix="facecap-wheel-") as temp:
        source = Path(temp) / "source"
        _stage_sources(source)
        if not (source / "README.md").exists():
            # pyproject names README.md as the long description; a checkout without it still builds.
            (source / "README.md").write_text("facecap\n", encoding="utf-8")
        wheels = Path(temp) / "wheels"
        command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-input", "--disable-pip-version-check",
                   "--wheel-dir", str(wheels), str(source)]
        if _build_backend_available():
            command.insert(4, "--no-build-isolation")
        print("build.py: " + " ".join(command), flush=True)
        result = subprocess.run(command, check=False)
        built = sorted(wheels.glob("facecap-*.whl"))
        if result.returncode != 0 or len(built) != 1:
            raise BuildError(f"pip wheel failed (exit {result.returncode}); is pip installed for {sys.executable}?")
        output.mkdir(parents=True, exist_ok=True)
        target = output / built[0].name
        shutil.copy2(built[0], target)
        return target


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_model(target: Path, source: str | None, url: str = MODEL_URL) -> None:
    """Copy the model from a local file, or download it from the pinned URL; refuse a wrong digest."""
    origin = source or url
    if source:
        path = Path(source).expanduser()
        if not path.is_file():
            raise BuildError(f"{MODEL_SOURCE_ENV}/--model-source {source!r} is not a file")
        shutil.copyfile(path, target)
    else:
        if not url.startswith(("https://", "http://")):
            raise BuildError(f"the model URL must be http(s): {url!r}")
        print(f"build.py: downloading {url}", flush=True)
        try:
            with urllib.request.urlopen(url, timeout=60) as response, target.open("wb") as out:  # noqa: S310
                shutil.copyfileobj(response, out)
        except OSError as exc:
            target.unlink(missing_ok=True)
            raise BuildError(f"cannot download the model ({exc}); set {MODEL_SOURCE_ENV} to a local copy") from exc
    digest = sha256_of(target)
    if digest != MODEL_SHA256:
        target.unlink()
        raise BuildError(f"the model from {origin} has sha256 {digest}, expected {MODEL_SHA256}")


class Builder:
    """Builds projects, making the wheel at most once."""

    def __init__(self, wheel: Path | None, model_source: str | None, model_url: str, scratch: Path) -> None:
        self._wheel = wheel
        self._model_source = model_source
        self._model_url = model_url
        self._scratch = scratch

    def wheel(self) -> Path:
        if self._wheel is None:
            self._wheel = build_wheel(self._scratch)
        return self._wheel

    def build(self, project: Project, output: Path, recipe_name: str = "recipe.yaml") -> Path:
        artifacts = output / "artifacts" / project.name / project.version
        shutil.rmtree(artifacts, ignore_errors=True)
        artifacts.mkdir(parents=True)
        for name in project.artifacts:
            self._make_artifact(name, artifacts / name)
        recipes = output / "recipes"
        recipes.mkdir(parents=True, exist_ok=True)
        recipe = recipes / recipe_name
        shutil.copyfile(project.recipe, recipe)
        print(f"build.py: built {project.name} {project.version} -> {output}", flush=True)
        return recipe

    def _make_artifact(self, name: str, target: Path) -> None:
        wheel_name = WHEEL_PATTERN.match(name)
        if wheel_name:
            wheel = self.wheel()
            if wheel.name != name:
                raise BuildError(f"the recipe names {name} but the package builds {wheel.name} "
                                 "(run `python -m facecap.packaging sync` after changing the version)")
            shutil.copy2(wheel, target)
        elif name == MODEL_NAME:
            fetch_model(target, self._model_source, self._model_url)
        else:
            raise BuildError(f"no rule to build the artifact {name!r}")


def all_projects() -> list[Project]:
    folders = [REPO, *sorted(p.parent for p in (REPO / "components").glob("*/gdk-config.json"))]
    return [load_project(folder) for folder in folders if (folder / "gdk-config.json").is_file()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--project", type=Path, default=Path.cwd(), help="GDK project folder (default: here)")
    parser.add_argument("--all", action="store_true", help="build every project of the repository")
    parser.add_argument("--output", type=Path,
                        help="output folder (default: <project>/greengrass-build; required with --all)")
    parser.add_argument("--wheel", type=Path, help="use this facecap wheel instead of building one")
    parser.add_argument("--model-source", default=os.environ.get(MODEL_SOURCE_ENV) or None,
                        help=f"local copy of the YuNet model (default: ${MODEL_SOURCE_ENV}, else download)")
    parser.add_argument("--model-url", default=os.environ.get(MODEL_URL_ENV) or MODEL_URL,
                        help=f"where to download the model from (default: ${MODEL_URL_ENV}, else the pinned URL)")
    args = parser.parse_args(argv)
    try:
        if args.wheel is not None and not args.wheel.is_file():
            raise BuildError(f"--wheel {args.wheel} is not a file")
        with tempfile.TemporaryDirectory(prefix="facecap-build-") as scratch:
            builder = Builder(args.wheel, args.model_source, args.model_url, Path(scratch))
            if args.all:
                if args.output is None:
                    raise BuildError("--all needs --output")
                for project in all_projects():
                    builder.build(project, args.output, f"{project.name}-{project.version}.yaml")
            else:
                project = load_project(args.project.resolve())
                builder.build(project, args.output or project.folder / "greengrass-build")
    except BuildError as exc:
        print(f"build.py: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
