"""The Jetson's local broker refuses strangers (issue 16, item 4): attacks by another local user, by an
anonymous client, and by a component reaching beyond its own topics, against the real `facecap broker`.

The other user is uid 65534 (nobody), run with setpriv; it uses the system's python3 and Mosquitto's own
clients, since the test's virtual environment lives where nobody cannot read."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from facecap.errors import MqttConnectError, PublishError
from facecap.mqtt import MqttClient, MqttSettings, ReceivedMessage, check_local_paths
from facecap.polling import wait_until

from ..conftest import require_binary
from ..support.edgebroker import EdgeBroker
from ..support.helpers import sample_face

DEVICE = "jetson-sec"
NOBODY = 65534


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EdgeBroker]:
    """One edge broker (socket and TCP listeners) for the module. Its run folder sits in a folder anyone
    may enter, so that only the run folder's own mode keeps another user out."""
    require_binary("mosquitto", "apt-get install mosquitto")
    parent = Path(tempfile.mkdtemp(prefix="fc-sec-"))
    parent.chmod(0o755)
    broker = EdgeBroker(tmp_path_factory.mktemp("edge"), device_id=DEVICE, run_dir=parent / "local").start()
    yield broker
    broker.stop()


def as_nobody(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *argv],
                          capture_output=True, text=True, timeout=20, check=False)


def test_another_user_can_neither_open_the_socket_nor_read_the_passwords(edge: EdgeBroker) -> None:
    require_binary("setpriv", "apt-get install util-linux")
    probe = ("import socket, sys\n"
             "s = socket.socket(socket.AF_UNIX)\n"
             "try:\n    s.connect(sys.argv[1])\nexcept OSError as e:\n    print(type(e).__name__)\n"
             "else:\n    print('connected')\n")
    assert as_nobody("/usr/bin/python3", "-c", probe, str(edge.socket_path)).stdout.strip() == "PermissionError"
    # The same probe as the component user connects: the refusal above is the folder's mode, not a typo.
    own = subprocess.run(["/usr/bin/python3", "-c", probe, str(edge.socket_path)], capture_output=True,
                         text=True, timeout=20, check=False)
    assert own.stdout.strip() == "connected"
    assert oct(edge.run_dir.stat().st_mode & 0o777) == "0o700"
    for identity in ("detector", "logger", "sender", "monitor"):
        path = edge.run_dir / f"{identity}.password"
        assert path.stat().st_mode & 0o777 == 0o600
        assert as_nobody("cat", str(path)).returncode != 0


def test_another_user_cannot_publish_or_read_over_tcp_with_guessed_credentials(edge: EdgeBroker) -> None:
    require_binary("mosquitto_pub", "apt-get install mosquitto-clients")
    base = ["-h", edge.host, "-p", str(edge.port), "-V", "mqttv5"]
    tries = [[], ["-u", "detector", "-P", "detector"], ["-u", "detector", "-P", ""], ["-u", "admin", "-P", "admin"]]
    for credentials in tries:
        pub = as_nobody("mosquitto_pub", *base, *credentials, "-t", f"faces/{DEVICE}/cam0", "-m", "fake", "-q", "1")
        assert pub.returncode != 0 and "not authori" in (pub.stderr + pub.stdout).lower(), (credentials, pub)
        sub = as_nobody("mosquitto_sub", *base, *credentials, "-t", "faces/#", "-W", "2")
        assert sub.returncode != 0 and sub.stdout == "", (credentials, sub)


def test_anonymous_clients_are_refused_on_the_socket_and_over_tcp(edge: EdgeBroker) -> None:
    require_binary("mosquitto_pub", "apt-get install mosquitto-clients")
    for where in (["--unix", str(edge.socket_path)], ["-h", edge.host, "-p", str(edge.port)]):
        pub = subprocess.run(["mosquitto_pub", *where, "-t", f"faces/{DEVICE}/cam0", "-m", "x"],
                             capture_output=True, text=True, timeout=20, check=False)
        assert pub.returncode != 0 and "not authorised" in pub.stderr, (where, pub)


def publish(settings: MqttSettings, topic: str) -> None:
    face = sample_face(device=DEVICE)
    with MqttClient(settings, f"sec-{settings.username}-{os.getpid()}") as client:
        future = client.publish(topic, face.payload, content_type=face.content_type,
                                user_properties=face.user_properties, timeout=10)
        assert future is not None
        future.result(timeout=10)


def test_each_component_stays_within_its_topics(edge: EdgeBroker) -> None:
    got: list[str] = []
    reader = MqttClient(edge.settings("logger"), "sec-reader",
                        on_message=lambda m: got.append(m.topic))
    with reader:
        reader.subscribe("faces/#")
        publish(edge.settings("detector"), f"faces/{DEVICE}/cam0")  # its own device: allowed
        assert wait_until(lambda: got == [f"faces/{DEVICE}/cam0"], 10), got
        with pytest.raises(PublishError, match="NOT_AUTHORIZED"):
            publish(edge.settings("detector"), "faces/another-device/cam0")
        with pytest.raises(PublishError, match="NOT_AUTHORIZED"):
            publish(edge.settings("logger"), f"faces/{DEVICE}/cam0")
        with pytest.raises(PublishError, match="NOT_AUTHORIZED"):
            publish(edge.settings("sender"), "faces/another-device/cam0")
        publish(edge.settings("sender"), f"faces/{DEVICE}/manual")
        assert wait_until(lambda: len(got) == 2, 10), got
    assert got == [f"faces/{DEVICE}/cam0", f"faces/{DEVICE}/manual"]


def test_the_detector_reads_no_faces_and_no_other_sys_topic(edge: EdgeBroker) -> None:
    """(Its reading of the bridge state is what EdgeBroker.bridge_state does in every bridge test.)"""
    got: list[ReceivedMessage] = []
    with MqttClient(edge.settings("detector"), "sec-detector-reads", on_message=got.append) as detector:
        detector.subscribe("faces/#")
        detector.subscribe("$SYS/broker/uptime")  # $SYS beyond broker/connection is not the detector's
        detector.subscribe("$SYS/broker/connection/#")
        publish(edge.settings("sender"), f"faces/{DEVICE}/cam1")
        with MqttClient(edge.settings("monitor"), "sec-monitor", on_message=got.append) as monitor:
            monitor.subscribe("$SYS/broker/uptime")
            assert wait_until(lambda: any(m.topic == "$SYS/broker/uptime" for m in got), 20)
    assert not any(m.topic.startswith("faces/") for m in got)
    assert sum(m.topic == "$SYS/broker/uptime" for m in got) >= 1


def test_a_wrong_or_closed_socket_path_is_one_error_naming_it(edge: EdgeBroker, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "mosquitto.sock"
    with pytest.raises(MqttConnectError) as caught:
        MqttClient(MqttSettings(socket_path=str(missing)), "sec-missing").start()
    assert str(caught.value) == (f"mqtt.socketPath: {missing}: no such socket (is the EdgeBroker running, "
                                 "with local.socket true?)")
    # Another user's process, for whom the run folder is closed: a permission error naming the path.
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        os.close(read)
        try:
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            check_local_paths(MqttSettings(socket_path=str(edge.socket_path)))
            message = "no error"
        except MqttConnectError as exc:
            message = str(exc)
        os.write(write, message.encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        message = pipe.read()
    os.waitpid(pid, 0)
    assert message == (f"mqtt.socketPath: {edge.socket_path}: permission denied for uid {NOBODY} (a folder on "
                       "the way is not open to this user)")


def test_facecap_send_to_a_wrong_socket_path_says_so_in_one_line(tmp_path: Path, shared_dir: Path) -> None:
    image = next((shared_dir / "faces" / "dev" / "images").glob("*.jpg"))
    missing = tmp_path / "run" / "mosquitto.sock"
    result = subprocess.run([sys.executable, "-m", "facecap.cli", "send", "--mqtt",
                             json.dumps({"socketPath": str(missing), "connectTimeoutSeconds": 1}), str(image)],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 1
    lines = (result.stdout + result.stderr).strip().splitlines()  # facecap logs to stdout
    assert len(lines) == 1 and lines[0].endswith(f"mqtt.socketPath: {missing}: no such socket (is the EdgeBroker "
                                                 "running, with local.socket true?)"), lines
