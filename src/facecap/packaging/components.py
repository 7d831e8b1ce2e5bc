"""What each Greengrass component is: the facts the recipe, gdk-config.json and docs are generated from."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..config import ConfigModel, component_model

NAMESPACE = "com.facecap"
PUBLISHER = "facecap"
GDK_VERSION = "1.6.2"
# `gdk component publish` appends -<region>-<account> to the bucket; both can be overridden on its command line.
PUBLISH_BUCKET = "facecap-greengrass-components"
PUBLISH_REGION = "us-east-1"
# Greengrass names x86_64 `amd64` (PlatformResolver); Jetsons are aarch64.
ARCHITECTURES = ("aarch64", "amd64")


@dataclass(frozen=True)
class RecipeKey:
    """A configuration key read by the recipe's lifecycle scripts, not by facecap itself."""

    name: str
    default: bool | str
    description: str


@dataclass(frozen=True)
class Dependency:
    component: str
    # HARD: Greengrass starts the dependant only once the dependency runs (and restarts it when the
    # dependency fails); SOFT: no ordering at all (GreengrassService.dependencyReady).
    kind: str


@dataclass(frozen=True)
class ComponentSpec:
    name: str
    folder: str  # relative to the repository root
    description: str
    command: str | None = None  # `facecap <command>`; None for the bundle, which runs nothing
    model: str | None = None  # key in facecap.config.COMPONENT_MODELS
    extra: str | None = None  # pip extra of the facecap wheel
    ships_model: bool = False
    dependencies: tuple[Dependency, ...] = ()
    recipe_keys: tuple[RecipeKey, ...] = ()

    @property
    def short_name(self) -> str:
        return self.name.rsplit(".", 1)[-1]

    def config_model(self) -> type[ConfigModel] | None:
        return component_model(self.model) if self.model else None


def _component(short_name: str, command: str, description: str, **details: Any) -> ComponentSpec:
    """A component with its own project folder that runs `facecap <command>`, configured by that model."""
    name = f"{NAMESPACE}.{short_name}"
    return ComponentSpec(name=name, folder=f"components/{name}", description=description, command=command,
                         model=command, **details)


PYTHON_KEY = RecipeKey(
    "python", "python3",
    "Python >= 3.10 (with venv) that Install builds the component's virtual environment from; the "
    "wheelhouses hold wheels for 3.10 on aarch64 and 3.10 and 3.11 on x86_64: e.g. `python3.10` on JetPack 5, "
    "whose python3 is 3.8.")

BROKER = f"{NAMESPACE}.EdgeBroker"
FIRST_START_BROKER = Dependency(BROKER, "HARD")

EDGE_BROKER = _component(
    "EdgeBroker", "broker",
    "Mosquitto on the device: the local broker of the face messages, bridged to the cloud broker.",
    recipe_keys=(
        PYTHON_KEY,
        RecipeKey("installMosquitto", False,
                  "Let the Install step (which runs as root for this only) install Mosquitto with apt-get when "
                  "it is missing, and disable the packaged service, which would take port 1883."),
    ),
)

FACE_DETECTOR = _component(
    "FaceDetector", "detector",
    "Watches a camera, detects faces with YuNet and publishes the best shot of each face to the local broker.",
    extra="detector",
    ships_model=True,
    dependencies=(FIRST_START_BROKER,),
    recipe_keys=(
        PYTHON_KEY,
        RecipeKey("systemSitePackages", False,
                  "Build the virtual environment with --system-site-packages and use the system's OpenCV "
                  "(a Jetson's, built with GStreamer for CSI cameras) and NumPy instead of the wheelhouse's."),
    ),
)

FACE_LOGGER = _component(
    "FaceLogger", "logger", "Logs one line per face message seen on the local broker, and a periodic summary.",
    dependencies=(FIRST_START_BROKER,),
    recipe_keys=(PYTHON_KEY,),
)

EDGE_COMPONENTS = (EDGE_BROKER, FACE_DETECTOR, FACE_LOGGER)

# The bundle has no process of its own: its dependencies pull the three components into a deployment. SOFT,
# because there is nothing to order or restart.
EDGE_STACK = ComponentSpec(
    name=f"{NAMESPACE}.EdgeStack",
    folder=".",
    description="The facecap edge: EdgeBroker, FaceDetector and FaceLogger in one deployment.",
    dependencies=tuple(Dependency(c.name, "SOFT") for c in EDGE_COMPONENTS),
)

ALL_COMPONENTS = (*EDGE_COMPONENTS, EDGE_STACK)
