#!/usr/bin/env python3
"""Build facecap's Greengrass components: the GDK `custom` build of every project in this repository.

The GDK runs it from a project folder (`gdk component build`), and tests run it directly because CI cannot
install the GDK. Standard library only, Python >= 3.10, so it runs under whatever Python the GDK uses.

For the project in the current folder (or --project DIR) it writes what `gdk component publish` expects:

    greengrass-build/recipes/recipe.yaml                    the project's recipe, unchanged
    greengrass-build/artifacts/<name>/<version>/<file>...   one file per s3:// artifact URI of the recipe

The artifacts come from the recipe's URIs (publish rewrites `s3://BUCKET_NAME/COMPONENT_NAME/
COMPONENT_VERSION/<file>` by file name):

- `wheelhouse-linux-<machine>.zip`, one per manifest: the device wheel (built from this repository with
  `pip wheel --no-deps`), the wheels pinned by components/locks/<component>-<target>.txt for each selected
  target of that machine (TARGETS; FACECAP_PLATFORMS or --platforms narrows them), pip's wheel, and per
  target the hashed requirements files Install uses offline. The locked wheels come from a cache
  (FACECAP_WHEEL_CACHE, default ~/.cache/facecap/wheels), each checked against its sha256; only what is
  missing there is downloaded, with `pip download --require-hashes`, so a build with a warm cache needs no
  network. components/lock.py refreshes the locks.
- the YuNet model, taken from FACECAP_MODEL_SOURCE (or --model-source) or downloaded from its pinned URL (or
  a mirror: FACECAP_MODEL_URL, --model-url); its sha256 is checked either way.

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
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from collections.abc import Iterable, Sequence
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
# The pinned URL and digest of the model, shared with `facecap detect` and the demo, which fetch it too.
MODEL_URL: str = RELEASE.MODEL_URL
MODEL_SHA256: str = RELEASE.MODEL_SHA256
MODEL_SOURCE_ENV = "FACECAP_MODEL_SOURCE"
MODEL_URL_ENV: str = RELEASE.MODEL_URL_ENV  # a mirror of the same file; the digest is checked all the same
# The files a wheel is built from; everything else in the repository stays out of the build.
WHEEL_INPUTS = ("pyproject.toml", "README.md", "LICENSE", "NOTICE", "src")
# Development tooling under src/ that the device wheel leaves out (paths relative to src/).
DEVICE_EXCLUDES = ("facecap/devkit", "facecap/packaging", "facecap/commands/demo.py")


PLATFORMS_ENV = "FACECAP_PLATFORMS"  # e.g. linux-x86_64-cp311: build the wheelhouses for these targets only
WHEEL_CACHE_ENV = "FACECAP_WHEEL_CACHE"  # where downloaded wheels are kept between builds
LOCKS = REPO / "components" / "locks"
INSTALLER_MARK = "installer"  # the lock's pip: in the wheelhouse, run from its wheel, never installed
WHEELHOUSE_PATTERN = re.compile(r"^wheelhouse-linux-(?P<machine>[a-z0-9_]+)\.zip$")
# One pinned requirement of a lock file: `name==version --hash=sha256:<hex>  # <wheel file> [<extra>]`. The
# file name is what the build looks for in its wheel cache; the extra marks what only that pip extra needs.
PIN_LINE = re.compile(r"^(?P<name>[A-Za-z0-9._-]+)==(?P<version>\S+)\s+--hash=sha256:(?P<sha256>[0-9a-f]{64})"
                      r"\s+#\s*(?P<file>\S+\.whl)(?:\s+\[(?P<extra>[A-Za-z0-9_-]+)\])?\s*$")


@dataclass(frozen=True)
class Target:
    """A platform the device installs on: the wheels of its locks must run there."""

    machine: str  # as `uname -m` names it; the wheelhouse of a machine holds every Python of it
    python: str  # major.minor
    glibc: str  # the oldest glibc the wheels must run on (manylinux_2_<minor>)

    @property
    def abi(self) -> str:
        return "cp" + self.python.replace(".", "")

    @property
    def name(self) -> str:
        return f"linux-{self.machine}-{self.abi}"

    def pip_options(self) -> list[str]:
        """`pip download` options that select this target's wheels, whatever runs pip. pip takes the
        manylinux tags literally, so every glibc from the target's down to 2.17 (manylinux2014) is listed."""
        newest = int(self.glibc.split(".")[1])
        tags = [f"manylinux_2_{minor}_{self.machine}" for minor in range(newest, 16, -1)]
        options = ["--only-binary=:all:", "--implementation", "cp", "--python-version", self.python,
                   "--abi", self.abi]
        for tag in [*tags, f"manylinux2014_{self.machine}"]:
            options += ["--platform", tag]
        return options


# JetPack 6 is Ubuntu 22.04 (Python 3.10, glibc 2.35); glibc 2.31 keeps JetPack 5 (Ubuntu 20.04) with a
# python3.10 possible too. Development machines and CI are x86_64 with 3.10 or 3.11 and any glibc since 2.28
# (Debian 10, RHEL 8).
TARGETS = (Target("aarch64", "3.10", "2.31"), Target("x86_64", "3.10", "2.28"), Target("x86_64", "3.11", "2.28"))


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
    digest: str = RELEASE.sha256_of(path)
    return digest


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


@dataclass(frozen=True)
class Pin:
    """One line of a lock file."""

    name: str
    version: str
    sha256: str
    file: str
    extra: str | None

    def requirement(self) -> str:
        return f"{self.name}=={self.version} --hash=sha256:{self.sha256}"


def lock_path(component: str, target: Target) -> Path:
    return LOCKS / f"{component}-{target.name}.txt"


def read_lock(path: Path) -> list[Pin]:
    if not path.is_file():
        raise BuildError(f"no lock file {path} (run `python3 components/lock.py`)")
    pins = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        match = PIN_LINE.match(line)
        if match is None:
            raise BuildError(f"{path}:{number}: not `name==version --hash=sha256:... # file.whl [extra]`")
        pins.append(Pin(**match.groupdict()))
    return pins


def selected_targets(value: str | None) -> tuple[Target, ...]:
    """The targets named in FACECAP_PLATFORMS (comma or space separated); every target when unset."""
    if not value or not value.strip():
        return TARGETS
    known = {target.name: target for target in TARGETS}
    names = [name for name in re.split(r"[\s,]+", value.strip()) if name]
    unknown = [name for name in names if name not in known]
    if unknown:
        raise BuildError(f"{PLATFORMS_ENV}: unknown target(s) {unknown}; the targets are {sorted(known)}")
    return tuple(known[name] for name in names)


def default_wheel_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "facecap" / "wheels"


class WheelCache:
    """The locked wheels, downloaded once: a folder of wheel files, each checked against its lock's sha256.
    A build whose wheels are all here needs no network."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def wheels(self, pins: Sequence[Pin], target: Target) -> list[Path]:
        missing = [pin for pin in pins if not self._good(pin)]
        if missing:
            self._download(missing, target)
        return [self.folder / pin.file for pin in pins]

    def _good(self, pin: Pin) -> bool:
        path = self.folder / pin.file
        return path.is_file() and sha256_of(path) == pin.sha256

    def _download(self, pins: Sequence[Pin], target: Target) -> None:
        """`pip download` of exactly these pins (pip's own cache and index settings apply), into the cache."""
        self.folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="facecap-wheels-", dir=self.folder) as temp:
            requirements = Path(temp) / "requirements.txt"
            requirements.write_text("".join(pin.requirement() + "\n" for pin in pins), encoding="utf-8")
            command = [sys.executable, "-m", "pip", "download", "--no-deps", "--require-hashes", "--no-input",
                       "--disable-pip-version-check", *target.pip_options(), "--dest", temp, "-r", str(requirements)]
            print(f"build.py: downloading {len(pins)} wheel(s) for {target.name}", flush=True)
            result = subprocess.run(command, check=False)
            if result.returncode != 0:
                raise BuildError(f"pip download for {target.name} failed (exit {result.returncode}); the wheels "
                                 f"are not in {self.folder} and the package index cannot be reached")
            for pin in pins:
                downloaded = Path(temp) / pin.file
                if not downloaded.is_file():
                    raise BuildError(f"pip chose another file than {pin.file} for {pin.name}=={pin.version} "
                                     f"({target.name}); refresh the locks (python3 components/lock.py)")
                os.replace(downloaded, self.folder / pin.file)


def build_wheelhouse(output: Path, component: str, machine: str, targets: Iterable[Target], *,
                     wheel: Path, cache: WheelCache) -> None:
    """A ZIP of the facecap wheel, the locked wheels of `component` for each target of `machine` (pip's among
    them, which Install runs from its wheel), and per target requirements-<abi>.txt (and
    requirements-<abi>-<extra>.txt for what only an extra needs), the files Install passes to
    `pip install --no-index --require-hashes`."""
    chosen = [t for t in targets if t.machine == machine]
    if not chosen:
        raise BuildError(f"{output.name}: no target of machine {machine} is selected")
    with zipfile.ZipFile(output, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        # Wheels are compressed already: stored, they unpack faster on a Jetson.
        archive.write(wheel, wheel.name, compress_type=zipfile.ZIP_STORED)
        stored: set[str] = {wheel.name}
        for platform in chosen:
            pins = read_lock(lock_path(component, platform))
            for path in cache.wheels(pins, platform):
                if path.name not in stored:
                    archive.write(path, path.name, compress_type=zipfile.ZIP_STORED)
                    stored.add(path.name)
            groups: dict[str, list[str]] = {}
            for pin in (p for p in pins if p.extra != INSTALLER_MARK):
                suffix = f"-{pin.extra}" if pin.extra else ""
                groups.setdefault(f"requirements-{platform.abi}{suffix}.txt", []).append(pin.requirement())
            for name, lines in groups.items():
                archive.writestr(name, "\n".join(lines) + "\n")
    size = output.stat().st_size / 1e6
    print(f"build.py: {output.name}: {len(stored)} wheels for {', '.join(t.name for t in chosen)}, "
          f"{size:.1f} MB", flush=True)


class Builder:
    """Builds projects, making the wheel at most once."""

    def __init__(self, wheel: Path | None, model_source: str | None, model_url: str, scratch: Path, *,
                 targets: Sequence[Target] = TARGETS, cache: WheelCache | None = None) -> None:
        self._wheel = wheel
        self._model_source = model_source
        self._model_url = model_url
        self._scratch = scratch
        self._targets = tuple(targets)
        self._cache = cache or WheelCache(default_wheel_cache())

    def wheel(self) -> Path:
        if self._wheel is None:
            self._wheel = build_wheel(self._scratch)
        return self._wheel

    def build(self, project: Project, output: Path, recipe_name: str = "recipe.yaml") -> Path:
        artifacts = output / "artifacts" / project.name / project.version
        shutil.rmtree(artifacts, ignore_errors=True)
        artifacts.mkdir(parents=True)
        for name in project.artifacts:
            self._make_artifact(project, name, artifacts / name)
        recipes = output / "recipes"
        recipes.mkdir(parents=True, exist_ok=True)
        recipe = recipes / recipe_name
        shutil.copyfile(project.recipe, recipe)
        print(f"build.py: built {project.name} {project.version} -> {output}", flush=True)
        return recipe

    def _make_artifact(self, project: Project, name: str, target: Path) -> None:
        wheel_name = WHEEL_PATTERN.match(name)
        wheelhouse = WHEELHOUSE_PATTERN.match(name)
        if wheel_name:
            shutil.copy2(self._checked_wheel(name), target)
        elif wheelhouse:
            machine = wheelhouse.group("machine")
            if not any(t.machine == machine for t in self._targets):
                # A narrowed build (tests, a local deployment) lacks this file; publishing it would fail.
                print(f"build.py: {project.name}: skipped {name} ({PLATFORMS_ENV} selects no {machine} target; "
                      "do not publish this build)", flush=True)
                return
            build_wheelhouse(target, project.name, machine, self._targets, wheel=self._checked_wheel(None),
                             cache=self._cache)
        elif name == MODEL_NAME:
            fetch_model(target, self._model_source, self._model_url)
        else:
            raise BuildError(f"no rule to build the artifact {name!r}")

    def _checked_wheel(self, name: str | None) -> Path:
        """The facecap wheel; it must be the one the recipe names (the version in its file name)."""
        wheel = self.wheel()
        expected = name or f"facecap-{project_version()}-py3-none-any.whl"
        if wheel.name != expected:
            raise BuildError(f"the recipe needs {expected} but the package builds {wheel.name} "
                             "(run `python -m facecap.packaging sync` after changing the version)")
        return wheel


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
    parser.add_argument("--platforms", default=os.environ.get(PLATFORMS_ENV),
                        help=f"wheelhouse targets to build, e.g. linux-x86_64-cp311 (default: ${PLATFORMS_ENV}, "
                             f"else all: {', '.join(t.name for t in TARGETS)})")
    parser.add_argument("--wheel-cache", type=Path,
                        default=Path(os.environ.get(WHEEL_CACHE_ENV) or default_wheel_cache()),
                        help=f"downloaded wheels (default: ${WHEEL_CACHE_ENV}, else {default_wheel_cache()})")
    args = parser.parse_args(argv)
    try:
        if args.wheel is not None and not args.wheel.is_file():
            raise BuildError(f"--wheel {args.wheel} is not a file")
        with tempfile.TemporaryDirectory(prefix="facecap-build-") as scratch:
            builder = Builder(args.wheel, args.model_source, args.model_url, Path(scratch),
                              targets=selected_targets(args.platforms), cache=WheelCache(args.wheel_cache))
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
