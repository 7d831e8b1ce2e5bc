"""Every user mistake gets one clear line (issue 17): a table of bad inputs, each run as the real `facecap`
command. Each must exit with its code (2 bad input, 1 a service out of reach), print no traceback, and say
in one line on stderr, `facecap <command>: ...`, which key, file or host is wrong.

The cases run in parallel threads, once for the module, so the slow ones (a demo that starts its servers,
a connection refused) overlap with the rest."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from facecap.devkit.servers import MosquittoServer, free_port
from facecap.processor.heartbeat import write_heartbeat

from .conftest import require_binary

pytestmark = pytest.mark.integration

FACECAP = str(Path(sys.executable).parent / "facecap")
NOPE = "/nonexistent/facecap"


@dataclass(frozen=True)
class Case:
    id: str
    argv: tuple[str, ...]
    code: int
    needle: str  # the key, file or host the one line must name
    env: dict[str, str] = field(default_factory=dict)
    stdout_empty: bool = False


def cases() -> list[Case]:
    bad_mqtt = json.dumps({"mqtt": {"username": "a", "passwordFile": f"{NOPE}/pw"}})
    table = [
        # validate-config runs the components' own start rules
        # The broker runs local-only without a cloud host (tests/test_broker_config.py): a warning.
        Case("validate-broker-no-host", ("validate-config", "broker", "{}"), 0, "warning: bridge.host: empty"),
        Case("validate-broker-plaintext", ("validate-config", "broker",
                                           '{"bridge":{"host":"example.com","tls":false}}'), 2, "bridge.tls"),
        Case("validate-empty", ("validate-config", "broker", ""), 2, "CONFIG: empty"),
        Case("validate-missing-file", ("validate-config", "broker", f"{NOPE}/conf.json"), 2, "CONFIG: file"),
        Case("validate-non-utf8", ("validate-config", "detector", "{latin1}"), 2, "latin1.json"),
        Case("validate-bad-json", ("validate-config", "logger", "{bad json"), 2, "invalid JSON"),
        Case("validate-unknown-component", ("validate-config", "camera", "{}"), 2, "camera"),
        Case("validate-unknown-key", ("validate-config", "detector", '{"typo":1}'), 2, "typo: unknown key"),
        Case("validate-range", ("validate-config", "processor", '{"workers":0}'), 2, "workers"),
        Case("validate-strict-ca", ("validate-config", "broker", '{"bridge":{"host":"h","caFile":"' + NOPE + '"}}',
                                    "--strict"), 2, "bridge.caFile"),
        Case("validate-strict-password", ("validate-config", "detector", bad_mqtt, "--strict"), 2,
             "mqtt.passwordFile"),
        Case("validate-strict-video", ("validate-config", "detector", '{"camera":{"source":"' + NOPE + '/v.mp4"}}',
                                       "--strict"), 2, "camera.source"),
        Case("validate-warning-password", ("validate-config", "detector", bad_mqtt), 0,
             "warning: mqtt.passwordFile"),
        # broker
        # (Without bridge.host, render shows the local-only broker it would run: tests/test_broker_bridge.py.)
        Case("render-host-with-port", ("broker", "render", "--config", '{"bridge":{"host":"h.example.com:8883"}}'),
             2, "bridge.host", stdout_empty=True),
        Case("render-plaintext", ("broker", "render", "--config", '{"bridge":{"host":"example.com","tls":false}}'),
             2, "example.com", stdout_empty=True),
        Case("render-port", ("broker", "render", "--config", '{"local":{"port":70000}}'), 2, "local.port",
             stdout_empty=True),
        Case("broker-non-utf8", ("broker", "--config", "{latin1}"), 2, "latin1.json"),
        Case("broker-missing-config", ("broker", "render", "--config", f"{NOPE}/b.json"), 2, "--config"),
        # detect: flags through the detector's model, one model lookup, unreadable files
        Case("detect-threshold-negative", ("detect", "--threshold", "-1", "{image}"), 2, "--threshold"),
        Case("detect-threshold-above-one", ("detect", "--threshold", "7", "{image}"), 2, "--threshold"),
        Case("detect-no-image", ("detect", "--json"), 2, "IMAGE"),
        Case("detect-width", ("detect", "--width", "-5", "{image}"), 2, "--width"),
        Case("detect-model-missing", ("detect", "--model", f"{NOPE}/m.onnx", "{image}"), 2, "--model"),
        Case("detect-env-model-missing", ("detect", "{image}"), 2, "FACECAP_MODEL",
             env={"FACECAP_MODEL": f"{NOPE}/m.onnx"}),
        Case("detect-missing-image", ("detect", "--json", "--detector", "haar", f"{NOPE}/a.jpg"), 1, f"{NOPE}/a.jpg"),
        Case("detect-not-an-image", ("detect", "--detector", "haar", "{text}"), 1, "notes.txt"),
        # detector
        Case("detector-password-file", ("detector", "--config", bad_mqtt), 2, "mqtt.passwordFile"),
        Case("detector-range", ("detector", "--config", '{"detection":{"scoreThreshold":2}}'), 2,
             "detection.scoreThreshold"),
        Case("detector-model", ("detector", "--model", f"{NOPE}/m.onnx"), 2, "--model"),
        Case("detector-video-missing", ("detector", "--config", '{"camera":{"source":"' + NOPE + '/v.mp4"}}'), 2,
             "camera.source"),
        Case("detector-non-utf8", ("detector", "--config", "{latin1}"), 2, "latin1.json"),
        Case("detector-video-fifo", ("detector", "--config", '{"camera":{"source":"{fifo}"}}'), 2,
             "is not a regular file"),
        # logger
        Case("logger-password-file", ("logger", "--config", bad_mqtt), 2, "mqtt.passwordFile"),
        Case("logger-port", ("logger", "--config", '{"mqtt":{"port":0}}'), 2, "mqtt.port"),
        Case("logger-ca-file", ("logger", "--config", '{"mqtt":{"tls":true,"caFile":"' + NOPE + '/ca.pem"}}'), 2,
             "mqtt.caFile"),
        # processor
        Case("processor-store", ("processor", "--config", '{"store":"ftp://x"}'), 2, "store"),
        Case("processor-password-file", ("processor", "--config", bad_mqtt), 2, "mqtt.passwordFile"),
        Case("healthcheck-no-file", ("processor", "healthcheck", "--file", f"{NOPE}/hb"), 1, f"{NOPE}/hb"),
        Case("healthcheck-never-connected", ("processor", "healthcheck", "--file", "{down}", "--max-age", "600",
                                             "--config", '{"unhealthyAfterSeconds":10}'), 1, "not connected"),
        Case("healthcheck-store-failing", ("processor", "healthcheck", "--file", "{failing}", "--max-age", "600",
                                           "--unhealthy-after", "10"), 1, "store has been failing"),
        Case("healthcheck-unhealthy-after", ("processor", "healthcheck", "--unhealthy-after", "0"), 2,
             "--unhealthy-after (unhealthyAfterSeconds)"),
        Case("healthcheck-max-age", ("processor", "healthcheck", "--file", "{down}", "--max-age", "nan"), 2,
             "--max-age"),
        # values the MQTT client (awscrt) would raise on at start, and the detector could not use
        Case("logger-empty-host", ("logger", "--config", '{"mqtt":{"host":""}}'), 2, "mqtt.host"),
        Case("validate-connect-timeout", ("validate-config", "logger", '{"mqtt":{"connectTimeoutSeconds":1e300}}'),
             2, "mqtt.connectTimeoutSeconds"),
        Case("validate-bridge-client-id", ("validate-config", "detector", '{"outbox":{"bridgeClientId":"x/#"}}'), 2,
             "outbox.bridgeClientId"),
        Case("validate-output-size", ("validate-config", "detector", '{"output":{"size":99999999}}'), 2,
             "output.size"),
        Case("validate-max-fps", ("validate-config", "detector", '{"camera":{"maxFps":1e-300}}'), 2,
             "camera.maxFps"),
        Case("detect-model-folder", ("detect", "--model", "{tmp}", "{image}"), 2, "is a folder, not a file"),
        Case("send-topic-prefix", ("send", "{image}", "--topic-prefix", "a/+"), 2, "--topic-prefix"),
        # send
        Case("send-port-range", ("send", "{image}", "--port", "70000"), 2, "--port"),
        Case("send-port-not-a-number", ("send", "{image}", "--port", "abc"), 2, "--port"),
        Case("send-repeat", ("send", "{image}", "--repeat", "-1"), 2, "--repeat"),
        Case("send-rate", ("send", "{image}", "--rate", "-1"), 2, "--rate"),
        Case("send-refused", ("send", "{image}", "--port", "{closed}", "--mqtt", '{"connectTimeoutSeconds":1}'), 1,
             "127.0.0.1:{closed}"),
        Case("send-wrong-password", ("send", "{image}", "--mqtt", '{"port":{broker},"username":"alice",'
                                     '"passwordFile":"{wrong}","connectTimeoutSeconds":5}'), 2, "alice"),
        Case("send-password-file", ("send", "{image}", "--mqtt", bad_mqtt[len('{"mqtt": '):-1]), 2, "passwordFile"),
        Case("send-missing-image", ("send", f"{NOPE}/a.jpg"), 2, f"{NOPE}/a.jpg"),
        Case("send-not-an-image", ("send", "{text}"), 2, "notes.txt"),
        Case("send-mqtt-non-utf8", ("send", "{image}", "--mqtt", "{latin1}"), 2, "latin1.json"),
        Case("send-device-id", ("send", "{image}", "--device-id", "bad id!"), 2, "deviceId"),
        # demo
        Case("demo-model-missing", ("demo", "--model", f"{NOPE}/m.onnx", "--out", "{tmp}/demo-a"), 2, "--model"),
        Case("demo-out-under-a-file", ("demo", "--out", "{text}/out"), 2, "--out"),
        Case("demo-source-missing", ("demo", "--source", "{tmp}/missing.mp4", "--duration", "5", "--out",
                                     "{tmp}/demo-b"), 2, "missing.mp4"),
    ]
    assert len({case.id for case in table}) == len(table)
    return table


CASES = cases()


@dataclass
class Outcome:
    code: int
    stdout: str
    stderr: str


@pytest.fixture(scope="module")
def places(tmp_path_factory: pytest.TempPathFactory, shared_dir: Path) -> Iterator[dict[str, str]]:
    tmp = tmp_path_factory.mktemp("cli-errors")
    latin1 = tmp / "latin1.json"
    latin1.write_bytes('{"deviceId": "caf\u00e9"}'.encode("latin-1"))
    text = tmp / "notes.txt"
    text.write_text("not an image")
    wrong = tmp / "wrong.txt"
    wrong.write_text("not-the-password\n")
    os.mkfifo(tmp / "video.fifo")
    write_heartbeat(tmp / "down.hb", {"connected": False, "subscribed": False, "disconnectedFor": 100.0})
    write_heartbeat(tmp / "failing.hb", {"connected": True, "disconnectedFor": None, "storeFailingFor": 100.0,
                                         "pending": 3})
    server = MosquittoServer(tmp / "broker", users={"alice": "secret"},
                             binary=require_binary("mosquitto", "apt-get install mosquitto")).start()
    try:
        yield {"tmp": str(tmp), "latin1": str(latin1), "text": str(text), "wrong": str(wrong),
               "image": str(next((shared_dir / "faces" / "dev" / "images").glob("*.jpg"))),
               "closed": str(free_port()), "broker": str(server.port), "fifo": str(tmp / "video.fifo"),
               "down": str(tmp / "down.hb"), "failing": str(tmp / "failing.hb")}
    finally:
        server.stop()


def fill(text: str, places: dict[str, str]) -> str:
    for name, value in places.items():
        text = text.replace("{" + name + "}", value)
    return text


def run_case(case: Case, places: dict[str, str]) -> Outcome:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACECAP_") or k == "FACECAP_SHARED"}
    # No download from the internet and no model from the user's cache, whatever the machine has.
    env.update({"XDG_CACHE_HOME": places["tmp"] + "/cache", "FACECAP_MODEL_URL": "http://127.0.0.1:9/none"})
    env.update(case.env)
    result = subprocess.run([FACECAP, *(fill(arg, places) for arg in case.argv)], capture_output=True, text=True,
                            env=env, cwd=places["tmp"], timeout=240, check=False)
    return Outcome(result.returncode, result.stdout, result.stderr)


@pytest.fixture(scope="module")
def outcomes(places: dict[str, str]) -> dict[str, Outcome]:
    with ThreadPoolExecutor(max_workers=6) as pool:
        futures = {case.id: pool.submit(run_case, case, places) for case in CASES}
        return {name: future.result() for name, future in futures.items()}


def test_the_table_covers_every_command() -> None:
    assert len(CASES) >= 40
    commands = {case.argv[0] for case in CASES}
    assert commands == {"validate-config", "broker", "detect", "detector", "logger", "processor", "send", "demo"}


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_one_clear_line(case: Case, outcomes: dict[str, Outcome], places: dict[str, str]) -> None:
    outcome = outcomes[case.id]
    shown = f"rc={outcome.code}\nstdout:\n{outcome.stdout[-2000:]}\nstderr:\n{outcome.stderr[-2000:]}"
    assert outcome.code == case.code, shown
    assert "Traceback" not in outcome.stdout + outcome.stderr, shown
    lines = [line for line in outcome.stderr.splitlines() if line.strip()]
    command = case.argv[0] if case.argv[0] != "processor" or case.argv[1] != "healthcheck" else "processor healthcheck"
    assert len(lines) == 1 and lines[0].startswith(f"facecap {command}: "), shown
    assert fill(case.needle, places) in lines[0], shown
    if case.stdout_empty:
        assert outcome.stdout == "", shown


def test_detect_json_writes_an_error_record(outcomes: dict[str, Outcome]) -> None:
    record = json.loads(outcomes["detect-missing-image"].stdout)
    assert record == {"image": f"{NOPE}/a.jpg", "error": "no such file"}


def test_debug_or_logging_level_debug_shows_the_traceback_of_a_user_mistake(places: dict[str, str]) -> None:
    debug = run_case(Case("debug", ("--debug", "send", "{image}", "--port", "70000"), 2, "--port"), places)
    assert debug.code == 2 and "Traceback" in debug.stderr and "--port (mqtt.port)" in debug.stderr
    config = json.dumps({"logging": {"level": "DEBUG"}, "mqtt": {"username": "a", "passwordFile": f"{NOPE}/pw"}})
    logged = run_case(Case("debug-level", ("logger", "--config", config), 2, "mqtt.passwordFile"), places)
    assert logged.code == 2 and "Traceback" in logged.stderr and "mqtt.passwordFile" in logged.stderr
