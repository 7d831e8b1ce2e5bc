"""Greengrass packaging: the recipes, GDK project files and configuration reference, generated from the
configuration models so that they cannot drift apart (`python -m facecap.packaging sync|check`).

The build itself (wheel, model, greengrass-build/) is components/build.py, which the GDK runs.
"""

from __future__ import annotations

from pathlib import Path

from ..release import project_version
from .components import ALL_COMPONENTS
from .deployment import render_deployment_template
from .recipes import render_gdk_config, render_recipe
from .reference import render_reference

__all__ = ["generated_files", "package_version", "repository_root"]


def repository_root() -> Path:
    """The checkout this module runs from (an editable install: src/facecap/packaging/ -> root)."""
    root = Path(__file__).resolve().parents[3]
    if not (root / "pyproject.toml").is_file():
        raise RuntimeError(f"{root} is not a facecap checkout; pass --root")
    return root


def package_version(root: Path) -> str:
    """[project] version from pyproject.toml: the version of the wheel and of every component."""
    try:
        return project_version(root)
    except ValueError as exc:
        raise RuntimeError(str(exc)) from None


def generated_files(root: Path) -> dict[str, str]:
    """Relative path -> the text sync writes there."""
    version = package_version(root)
    files: dict[str, str] = {}
    for spec in ALL_COMPONENTS:
        folder = "" if spec.folder == "." else spec.folder + "/"
        files[f"{folder}recipe.yaml"] = render_recipe(spec, version)
        files[f"{folder}gdk-config.json"] = render_gdk_config(spec, version)
    files["recipes/deployment.json"] = render_deployment_template(version)
    files["docs/configuration.md"] = render_reference()
    return files
