"""The built components, run the way Greengrass runs them: components/build.py builds them as the GDK's custom
build does, the nucleus stand-in installs them for real and offline (a venv per version in the work folder,
pip install from the wheelhouse artifact with hashes, inside a network namespace without network) and runs
them against real Mosquitto brokers.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from facecap.contract import parse_message
from facecap.mqtt import MqttClient, MqttSettings
from facecap.packaging.components import EDGE_BROKER, FACE_LOGGER, ComponentSpec
from facecap.packaging.recipes import render_recipe
from facecap.polling import wait_until
from facecap.release import MODEL_FILE

from .conftest import MosquittoFactory, require_offline
from .greengrass_harness import BuiltComponent, ConfigurationUpdate, Nucleus, host_target
from .support.helpers import Collector, model_mirror, sample_face, subscriber
from .support.offline import NamespaceUnavailable, exec_prefix, interfaces

REPO = Path(__file__).resolve().parent.parent
BUILD_SCRIPT = REPO / "components" / "build.py"
BROKER, DETECTOR, LOGGER, STACK = (f"com.facecap.{n}" for n in ("EdgeBroker", "FaceDetector", "FaceLogger",
                                                                    "EdgeStack"))
MODEL_SHA256 = "8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4"
pytestmark = pytest.mark.integration


def run_build(*args: str, cwd: Path = REPO, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """components/build.py for this machine's wheelhouse only (unless `env` says otherwise)."""
    environment = {"FACECAP_PLATFORMS": host_target(), **os.environ, **(env or {})}
    return subprocess.run([sys.executable, str(BUILD_SCRIPT), *args], cwd=cwd, env=environment,
                          capture_output=True, text=True, timeout=300, check=False)


@pytest.fixture
def nucleus(installed: Nucleus) -> Iterator[Nucleus]:
    yield installed
    installed.stop_all()


def wait_for_text(nucleus: Nucleus, name: str, texts: list[str], timeout: float = 20.0) -> str:
    """The component's output since its latest start, once every text is in it (or the time is up): an
    earlier test's run of the same component must not answer for this one."""
    deadline = time.monotonic() + timeout
    while True:
        log = nucleus.run_log_text(name)
        if all(text in log for text in texts) or time.monotonic() > deadline:
            return log
        time.sleep(0.2)


def local_broker(device: str = "jetson-harness") -> dict[str, Any]:
    return {"deviceId": device, "bridge": {"enabled": False}}


def edge_client(nucleus: Nucleus, identity: str, name: str, **options: Any) -> MqttClient:
    """A client of the EdgeBroker as a component user's tool would be: its socket, one of its identities."""
    run_dir = nucleus.work_path(BROKER) / "local"
    socket_path = run_dir / "mosquitto.sock"
    assert wait_until(socket_path.is_socket, 20), nucleus.run_log_text(BROKER)[-2000:]
    settings = MqttSettings(socket_path=str(socket_path), username=identity,
                            password_file=str(run_dir / f"{identity}.password"))
    return MqttClient(settings, name, **options)


# --- the build ---------------------------------------------------------------------------------------------

def device_wheel(edge_build: Path, target: Path, component: str = LOGGER) -> Path:
    """The facecap wheel out of a built component's wheelhouse."""
    wheelhouse = next((edge_build / "artifacts" / component).glob("*/wheelhouse-*.zip"))
    with zipfile.ZipFile(wheelhouse) as archive:
        name = next(n for n in archive.namelist() if n.startswith("facecap-") and n.endswith(".whl"))
        target.mkdir(parents=True, exist_ok=True)
        return Path(archive.extract(name, target))


def test_build_lays_out_every_component(edge_build: Path) -> None:
    version = json.loads((REPO / "gdk-config.json").read_text())["component"][STACK]["version"]
    recipes = sorted(p.name for p in (edge_build / "recipes").iterdir())
    assert recipes == sorted(f"{name}-{version}.yaml" for name in (BROKER, DETECTOR, LOGGER, STACK))
    # Only this machine's wheelhouse: the tests build the host's target alone (FACECAP_PLATFORMS).
    wheelhouse = f"wheelhouse-linux-{platform.machine()}.zip"
    for name, files in ((BROKER, [wheelhouse]), (LOGGER, [wheelhouse]),
                        (DETECTOR, [MODEL_FILE, wheelhouse]), (STACK, [])):
        folder = edge_build / "artifacts" / name / version
        assert sorted(p.name for p in folder.iterdir()) == files
    model = edge_build / "artifacts" / DETECTOR / version / MODEL_FILE
    assert hashlib.sha256(model.read_bytes()).hexdigest() == MODEL_SHA256
    # The built recipe is the project's recipe, byte for byte: publish fills in bucket and version.
    source = (REPO / "components" / DETECTOR / "recipe.yaml").read_bytes()
    assert (edge_build / "recipes" / f"{DETECTOR}-{version}.yaml").read_bytes() == source
    abi = f"cp{sys.version_info.major}{sys.version_info.minor}"
    wheel = f"facecap-{version}-py3-none-any.whl"
    for name, requirement_files in ((LOGGER, [f"requirements-{abi}.txt"]),
                                    (DETECTOR, [f"requirements-{abi}-detector.txt", f"requirements-{abi}.txt"])):
        with zipfile.ZipFile(edge_build / "artifacts" / name / version / wheelhouse) as archive:
            names = archive.namelist()
            assert sorted(n for n in names if n.endswith(".txt")) == requirement_files
            pinned = [line.split()[0] for n in requirement_files for line in archive.read(n).decode().splitlines()]
            # The facecap wheel, every pinned wheel, and pip's, which installs them.
            installer = [n for n in names if n.startswith("pip-") and n.endswith("-py3-none-any.whl")]
            assert wheel in names and len(installer) == 1
            assert len(names) == len(pinned) + 2 + len(requirement_files)
            if name == LOGGER:
                with zipfile.ZipFile(io.BytesIO(archive.read(wheel))) as inner:
                    entry_points = inner.read(f"facecap-{version}.dist-info/entry_points.txt").decode()
                    assert not [n for n in inner.namelist() if "__pycache__" in n or n.startswith("tests/")]
        assert {p.split("==")[0] for p in pinned} >= {"awscrt", "awsiotsdk", "pydantic", "pydantic-core"}
    assert "facecap = facecap.cli:main" in entry_points
    assert {"opencv-python-headless", "numpy"} <= {p.split("==")[0] for p in pinned}


def test_the_device_wheel_holds_only_runtime_code(edge_build: Path, tmp_path: Path) -> None:
    wheel = device_wheel(edge_build, tmp_path / "wheel")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        archive.extractall(tmp_path / "site")
    for runtime in ("facecap/cli.py", "facecap/contract.py", "facecap/config.py", "facecap/detector/runner.py",
                    "facecap/broker/runner.py", "facecap/logger/runner.py", "facecap/processor/runner.py",
                    "facecap/storage/s3.py", "facecap/commands/detector.py"):
        assert runtime in names
    assert "facecap/mqtt.py" in names or "facecap/mqtt/__init__.py" in names
    tooling = sorted(n for n in names if n.startswith(("facecap/devkit/", "facecap/packaging/"))
                     or n == "facecap/commands/demo.py")
    assert tooling == []
    # On a device, `facecap demo` says in one line why it is not there; the other commands still parse.
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}
    demo = subprocess.run([sys.executable, "-m", "facecap.cli", "demo"], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60, check=False)
    assert demo.returncode == 2
    assert demo.stderr.splitlines() == [demo.stderr.strip()]
    assert "the demo is part of the development kit" in demo.stderr
    where = subprocess.run([sys.executable, "-c", "import facecap.cli; print(facecap.cli.__file__)"], env=env,
                           cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False)
    assert where.stdout.strip().startswith(str(tmp_path / "site"))


def test_gdk_style_build_in_a_project_folder(edge_build: Path, tmp_path: Path) -> None:
    """As `gdk component build` runs it: from the project folder, no arguments but where to write."""
    version = json.loads((REPO / "gdk-config.json").read_text())["component"][STACK]["version"]
    wheel = device_wheel(edge_build, tmp_path / "wheel")
    result = run_build("--output", str(tmp_path / "out"), "--wheel", str(wheel), cwd=REPO / "components" / LOGGER,
                       env={"FACECAP_PLATFORMS": host_target()})
    assert result.returncode == 0, result.stderr
    source = (REPO / "components" / LOGGER / "recipe.yaml").read_bytes()
    assert (tmp_path / "out" / "recipes" / "recipe.yaml").read_bytes() == source
    built = [p.name for p in (tmp_path / "out" / "artifacts" / LOGGER / version).iterdir()]
    assert built == [f"wheelhouse-linux-{platform.machine()}.zip"]
    # A narrowed build says that it lacks the other machines' wheelhouses.
    assert "skipped wheelhouse-linux-" in result.stdout and "do not publish" in result.stdout


def test_a_model_with_the_wrong_digest_is_refused(edge_build: Path, tmp_path: Path) -> None:
    impostor = tmp_path / "model.onnx"
    impostor.write_bytes(b"not the YuNet model")
    wheel = device_wheel(edge_build, tmp_path / "wheel")
    result = run_build("--project", str(REPO / "components" / DETECTOR), "--output", str(tmp_path / "out"),
                       "--wheel", str(wheel), "--model-source", str(impostor))
    assert result.returncode == 1
    assert "sha256" in result.stderr and MODEL_SHA256 in result.stderr
    missing = run_build("--project", str(REPO / "components" / DETECTOR), "--output", str(tmp_path / "out"),
                        "--wheel", str(wheel), env={"FACECAP_MODEL_SOURCE": str(tmp_path / "nowhere.onnx")})
    assert missing.returncode == 1 and "nowhere.onnx" in missing.stderr and "is not a file" in missing.stderr


def test_the_model_is_downloaded_and_checked(edge_build: Path, model_path: Path, tmp_path: Path) -> None:
    """The download path, from a mirror on loopback (the pinned URL needs the internet)."""
    wheel = device_wheel(edge_build, tmp_path / "wheel")
    with model_mirror(model_path, tmp_path / "served") as base:
        good = run_build("--project", str(REPO / "components" / DETECTOR), "--output", str(tmp_path / "good"),
                         "--wheel", str(wheel), env={"FACECAP_MODEL_URL": f"{base}/yunet.onnx",
                                                     "FACECAP_MODEL_SOURCE": ""})
        bad = run_build("--project", str(REPO / "components" / DETECTOR), "--output", str(tmp_path / "bad"),
                        "--wheel", str(wheel), "--model-url", f"{base}/other.onnx", env={"FACECAP_MODEL_SOURCE": ""})
    assert good.returncode == 0, good.stderr
    downloaded = next((tmp_path / "good" / "artifacts" / DETECTOR).glob(f"*/{MODEL_FILE}"))
    assert hashlib.sha256(downloaded.read_bytes()).hexdigest() == MODEL_SHA256
    assert bad.returncode == 1 and "other.onnx" in bad.stderr and MODEL_SHA256 in bad.stderr
    assert not list((tmp_path / "bad" / "artifacts" / DETECTOR).glob("*/*.onnx"))


def test_a_recipe_out_of_step_with_its_project_is_refused(tmp_path: Path) -> None:
    project = tmp_path / "project"
    shutil.copytree(REPO / "components" / LOGGER, project, ignore=shutil.ignore_patterns("greengrass-build"))
    config = json.loads((project / "gdk-config.json").read_text())
    config["component"][LOGGER]["version"] = "9.9.9"
    (project / "gdk-config.json").write_text(json.dumps(config))
    result = run_build("--project", str(project), "--output", str(tmp_path / "out"))
    assert result.returncode == 1
    assert "ComponentVersion" in result.stderr and "9.9.9" in result.stderr and "sync" in result.stderr


# --- the components, installed and run ----------------------------------------------------------------

def venv_of(nucleus: Nucleus, name: str) -> Path:
    return nucleus.work_path(name) / f"venv-{nucleus.services[name].component.version}"


def installed_versions(python: Path) -> dict[str, str]:
    """Distribution name (normalised) -> version, of what is installed in a venv."""
    script = ("import importlib.metadata as m, json, re; print(json.dumps({re.sub(r'[-_.]+', '-', "
              "d.metadata['Name']).lower(): d.version for d in m.distributions()}))")
    listing = subprocess.run([str(python), "-c", script], capture_output=True, text=True, check=True, timeout=60)
    versions: dict[str, str] = json.loads(listing.stdout)
    return versions


def test_every_component_installs_without_network(
        installed: Nucleus, offline_netns: str | NamespaceUnavailable) -> None:
    """The shared nucleus installed every component inside a network namespace that has only loopback: pip
    found every locked wheel, hash-checked, in the unpacked wheelhouse artifact."""
    namespace = require_offline(offline_netns)
    assert installed.install_wrapper == exec_prefix(namespace)
    assert interfaces(namespace) == ["lo"]
    abi = f"cp{sys.version_info.major}{sys.version_info.minor}"
    for name, extra in ((BROKER, None), (DETECTOR, "detector"), (LOGGER, None)):
        version = installed.services[name].component.version
        wheelhouse = installed.decompressed_path(name, version) / f"wheelhouse-linux-{platform.machine()}"
        assert f"installed facecap into {venv_of(installed, name)} from {wheelhouse}" in installed.log_text(name)
        locks = [wheelhouse / f"requirements-{abi}.txt"] + ([wheelhouse / f"requirements-{abi}-{extra}.txt"]
                                                            if extra else [])
        pinned = dict(line.split()[0].split("==") for lock in locks for line in lock.read_text().splitlines())
        versions = installed_versions(venv_of(installed, name) / "bin" / "python")
        assert {package: versions.get(package) for package in pinned} == pinned
        assert versions["facecap"] == version


def test_install_is_done_once(nucleus: Nucleus) -> None:
    for name in (BROKER, DETECTOR, LOGGER):
        started = time.monotonic()
        result = nucleus.install(name)
        assert result.ok and "already installed" in result.output, result.output
        assert time.monotonic() - started < 10
        assert (venv_of(nucleus, name) / "bin" / "facecap").exists()
    detector_python = venv_of(nucleus, DETECTOR) / "bin" / "python"
    check = subprocess.run([str(detector_python), "-c", "import cv2, facecap; print(cv2.__version__)"],
                           capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stderr  # the detector extra brought OpenCV


def as_version(built: dict[str, BuiltComponent], spec: ComponentSpec, version: str) -> BuiltComponent:
    """The component as a later release would be: its recipe generated for `version` (the same artifacts,
    whose facecap wheel keeps its own version)."""
    return BuiltComponent(yaml.safe_load(render_recipe(spec, version)), built[spec.name].artifacts)


def test_a_new_version_keeps_the_previous_venv_for_a_rollback(
        built: dict[str, BuiltComponent], tmp_path: Path, offline_netns: str | NamespaceUnavailable) -> None:
    """Upgrade, then roll back, without network: the rollback finds its venv ready, and only what is older
    than the previous version goes (the pruning order itself is unit-tested in test_greengrass_packaging)."""
    nucleus = Nucleus(tmp_path / "greengrass")
    nucleus.install_wrapper = exec_prefix(require_offline(offline_netns))

    def deploy(version: str) -> str:
        nucleus.deploy([as_version(built, EDGE_BROKER, version), as_version(built, FACE_LOGGER, version)])
        result = nucleus.install(LOGGER)
        assert result.ok, result.output
        return result.output

    work = nucleus.work_path(LOGGER)
    (work / "venv" / "bin").mkdir(parents=True)  # what facecap 0.1.0 left: one unversioned venv
    assert "installed facecap into" in deploy("0.1.0")
    assert (work / "venv").is_dir()  # the version before, until the next upgrade
    output = deploy("0.1.1")
    assert "installed facecap into" in output and f"removing {work / 'venv'}" in output
    assert sorted(p.name for p in work.glob("venv*")) == ["venv-0.1.0", "venv-0.1.1"]
    stamp = (work / "venv-0.1.0" / "facecap-install.txt").stat().st_mtime_ns
    started = time.monotonic()
    assert "already installed" in deploy("0.1.0")  # the rollback
    assert time.monotonic() - started < 10
    assert (work / "venv-0.1.0" / "facecap-install.txt").stat().st_mtime_ns == stamp
    assert sorted(p.name for p in work.glob("venv*")) == ["venv-0.1.0", "venv-0.1.1"]
    check = subprocess.run([str(work / "venv-0.1.0" / "bin" / "facecap"), "--help"], capture_output=True, text=True,
                           check=False, timeout=60)
    assert check.returncode == 0 and "logger" in check.stdout, check.stderr


def test_edge_broker_bridges_faces_to_the_cloud_and_the_logger_logs_them(
        nucleus: Nucleus, built: dict[str, BuiltComponent], mosquitto: MosquittoFactory) -> None:
    cloud = mosquitto("cloud")
    device = "jetson-harness"
    broker_config = {"deviceId": device, "bridge": {"host": cloud.host, "port": cloud.port, "tls": False}}
    # No mqtt settings: the logger finds the EdgeBroker's socket and its own identity by itself.
    logger_config = {"deviceId": device, "summaryIntervalSeconds": 2}
    nucleus.deploy([built[BROKER], built[LOGGER]], {BROKER: ConfigurationUpdate(merge=broker_config),
                                                    LOGGER: ConfigurationUpdate(merge=logger_config)})
    arrived, health = Collector(), Collector()
    cloud_subscriber = subscriber(cloud, "faces/#", arrived)
    health_subscriber = subscriber(cloud, f"facecap/{device}/+/status", health)
    nucleus.start_all()
    publisher = edge_client(nucleus, "sender", "harness-publisher")
    publisher.start()
    faces = [sample_face(device=device, frame=i) for i in range(20)]
    try:
        wait_for_text(nucleus, LOGGER, ["logging faces on"], timeout=20)
        socket_path = nucleus.work_path(BROKER) / "local" / "mosquitto.sock"
        wait_for_text(nucleus, LOGGER, [f"connecting to unix socket {socket_path} as logger"], timeout=5)
        for face in faces:
            future = publisher.publish(face.topic, face.payload, content_type=face.content_type,
                                       user_properties=face.user_properties)
            assert future is not None
            future.result(timeout=10)
        assert arrived.wait_for(len(faces), timeout=30), f"{len(arrived.messages)} of {len(faces)} arrived"
        # The bridge carries the components' health out too: the logger's retained `online` reaches the cloud.
        assert health.wait_for(1, timeout=30)
        assert (health.messages[0].topic, health.messages[0].payload) == (f"facecap/{device}/logger/status",
                                                                          b"online")
    finally:
        publisher.stop()
        cloud_subscriber.stop()
        health_subscriber.stop()
    for message in arrived.messages:
        parsed = parse_message(message.topic, message.payload, message.content_type, message.user_properties)
        assert parsed.device_id == device
    assert {dict(m.user_properties)["face-id"] for m in arrived.messages} == {f.face_id for f in faces}
    log = wait_for_text(nucleus, LOGGER, [f.face_id for f in faces])
    missing = [index for index, face in enumerate(faces) if face.face_id not in log]
    # On failure say which faces and what the logger said besides face lines (connections, summaries).
    service_lines = [line for line in log.splitlines() if " facecap." in line and " facecap.faces:" not in line]
    logger_at_broker = [line for line in nucleus.run_log_text(BROKER).splitlines() if "facecap-logger" in line]
    assert not missing, (f"faces {missing} not logged; logger said:\n" + "\n".join(service_lines[-30:])
                         + "\nbroker said of the logger:\n" + "\n".join(logger_at_broker[-10:]))
    codes = nucleus.stop_all()
    assert codes == {LOGGER: 0, BROKER: 0}, nucleus.run_log_text(BROKER)[-2000:]


def test_edge_broker_without_a_cloud_host_runs_local_only(
        nucleus: Nucleus, built: dict[str, BuiltComponent]) -> None:
    nucleus.deploy([built[BROKER]], {BROKER: ConfigurationUpdate(reset=[""])})
    nucleus.start(BROKER)
    # RUNNING is reported once Mosquitto accepts connections on its socket.
    assert nucleus.wait_for_state(BROKER, "RUNNING", "ERRORED", "BROKEN", timeout=60) == "RUNNING"
    assert (nucleus.work_path(BROKER) / "local" / "mosquitto.sock").is_socket()
    log = nucleus.run_log_text(BROKER)
    assert "bridge.host is empty: running a LOCAL-ONLY broker" in log
    assert "connection cloud" not in (nucleus.work_path(BROKER) / "mosquitto.conf").read_text()
    assert nucleus.stop(BROKER) == 0


def test_detector_publishes_faces_from_a_video(
        nucleus: Nucleus, built: dict[str, BuiltComponent], shared_dir: Path, tmp_path: Path) -> None:
    video = tmp_path / "visit.avi"
    write_video(face_photo(shared_dir), video)
    detector_config = {
        "deviceId": "jetson-harness", "cameraId": "door",
        "camera": {"source": str(video), "kind": "file", "loop": True, "maxFps": 10},
        "tracking": {"mode": "every"}, "statsIntervalSeconds": 2,
    }
    nucleus.deploy([built[BROKER], built[DETECTOR]], {BROKER: ConfigurationUpdate(merge=local_broker()),
                                                      DETECTOR: ConfigurationUpdate(merge=detector_config)})
    nucleus.start(BROKER)
    faces = Collector()
    listener = edge_client(nucleus, "monitor", "harness-listener", on_message=faces)
    listener.start()
    listener.subscribe("faces/#")
    try:
        nucleus.start(DETECTOR)
        assert faces.wait_for(3, timeout=60), nucleus.run_log_text(DETECTOR)[-3000:]
    finally:
        listener.stop()
    for message in faces.messages[:3]:
        parsed = parse_message(message.topic, message.payload, message.content_type, message.user_properties)
        assert (parsed.device_id, parsed.camera_id) == ("jetson-harness", "door")
        assert parsed.topic == "faces/jetson-harness/door"
    log = nucleus.run_log_text(DETECTOR)
    # The model is the artifact the recipe points FACECAP_MODEL at; no fallback to Haar.
    assert "detector yunet" in log.lower() and "FALLING BACK" not in log
    # Over the EdgeBroker's socket, as the detector identity, with no mqtt settings in the deployment.
    assert f"unix socket {nucleus.work_path(BROKER) / 'local' / 'mosquitto.sock'} as detector" in log
    assert nucleus.stop(DETECTOR) == 0


def test_install_fails_clearly(built: dict[str, BuiltComponent], tmp_path: Path) -> None:
    """Checked before anything is downloaded, in a nucleus of its own."""
    nucleus = Nucleus(tmp_path / "greengrass")
    nucleus.deploy([built[BROKER], built[LOGGER]], {
        BROKER: ConfigurationUpdate(merge={"mosquittoPath": str(tmp_path / "no-mosquitto")}),
        LOGGER: ConfigurationUpdate(merge={"python": str(tmp_path / "no-python")}),
    })
    broker = nucleus.install(BROKER)
    assert broker.step == "Install" and broker.returncode == 1
    assert "mosquitto not found" in broker.output
    logger = nucleus.install(LOGGER)
    assert logger.returncode == 1 and "is not Python >= 3.10" in logger.output
    assert not list(nucleus.work_path(LOGGER).glob("venv*"))


# --- a sample video from the shared photos ---------------------------------------------------------------

def face_photo(shared_dir: Path) -> Path:
    manifest = json.loads((shared_dir / "faces" / "dev" / "manifest.json").read_text())
    for image in manifest["images"]:
        if image["faces"] == 1 and "frontal" in image.get("tags", []) and not image.get("ignore"):
            return shared_dir / "faces" / "dev" / "images" / str(image["file"])
    raise AssertionError("no single frontal face in the shared photos")


def write_video(photo: Path, target: Path, frames: int = 30) -> None:
    import cv2
    import numpy as np

    image = cv2.imread(str(photo))
    assert image is not None
    canvas = np.zeros((480, 640, 3), dtype=np.uint8)
    scale = min(640 / image.shape[1], 480 / image.shape[0])
    resized = cv2.resize(image, (int(image.shape[1] * scale), int(image.shape[0] * scale)))
    top, left = (480 - resized.shape[0]) // 2, (640 - resized.shape[1]) // 2
    canvas[top:top + resized.shape[0], left:left + resized.shape[1]] = resized
    writer = cv2.VideoWriter(str(target), cv2.VideoWriter.fourcc(*"MJPG"), 10, (640, 480))
    for _ in range(frames):
        writer.write(canvas)
    writer.release()
    assert target.stat().st_size > 0
