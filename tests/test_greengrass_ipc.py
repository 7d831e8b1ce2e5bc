"""Greengrass IPC: the event-stream framing of the stand-in, and the unmodified awsiotsdk client (through
facecap.greengrass) against the nucleus stand-in's IPC server: authentication, configuration validation and
the deployment outcome, live configuration updates, lifecycle states and accessControl."""

from __future__ import annotations

import logging
import struct
import sys
import time
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from facecap.config import component_model, default_configuration
from facecap.detector.config import DetectorConfig
from facecap.devkit.servers import MosquittoServer
from facecap.errors import ConfigError, GreengrassError
from facecap.greengrass import GreengrassIpc
from facecap.greengrass.component import ComponentIpc
from facecap.greengrass.ipc import SOCKET_ENV, TOKEN_ENV
from facecap.greengrass.validation import model_validator
from facecap.polling import wait_until

from .detector.conftest import detector_config
from .eventstream import FrameReader, FramingError, Header, HeaderType, decode_message, encode_message
from .greengrass_harness import BuiltComponent, ConfigurationUpdate, DeploymentFailed, Nucleus
from .greengrass_ipc import _topic_matches, changed_key_paths, is_authorized

REPO = Path(__file__).resolve().parent.parent
APP = "com.example.App"
PUBLISH_POLICY = {"aws.greengrass.ipc.mqttproxy": {"com.example.App:status": {
    "policyDescription": "device health to IoT Core", "operations": ["aws.greengrass#PublishToIoTCore"],
    "resources": ["facecap/+/status"]}}}


# --- framing ---------------------------------------------------------------------------------------------------

@pytest.mark.unit
def test_empty_message_matches_the_published_test_vector() -> None:
    # aws-c-event-stream's "empty message" vector: 16 bytes, prelude CRC 0x05c248eb, message CRC 0x7d98c8ff.
    assert encode_message([]).hex() == "000000100000000005c248eb7d98c8ff"
    assert decode_message(bytes.fromhex("000000100000000005c248eb7d98c8ff")).headers == ()


@pytest.mark.unit
def test_every_header_type_round_trips() -> None:
    headers = [
        Header.boolean("yes", True), Header.boolean("no", False), Header("byte", HeaderType.BYTE, -7),
        Header("short", HeaderType.INT16, -300), Header.int32(":stream-id", 2**31 - 1),
        Header("long", HeaderType.INT64, -(2**40)), Header("raw", HeaderType.BYTE_BUF, b"\x00\xff"),
        Header.string("operation", "aws.greengrass#GetConfiguration"),
        Header("when", HeaderType.TIMESTAMP, 1_764_115_200_000), Header("id", HeaderType.UUID, uuid.uuid4()),
    ]
    frame = encode_message(headers, b'{"x": 1}')
    total, headers_length, prelude_crc = struct.unpack_from(">III", frame)
    assert total == len(frame) and prelude_crc == zlib.crc32(frame[:8])
    assert struct.unpack_from(">I", frame, total - 4)[0] == zlib.crc32(frame[:-4])
    message = decode_message(frame)
    assert message.headers == tuple(headers) and message.payload == b'{"x": 1}'
    assert message.header(":STREAM-ID") == 2**31 - 1  # names compare case-insensitively
    assert headers_length == len(frame) - 16 - len(b'{"x": 1}')


@pytest.mark.unit
@pytest.mark.parametrize(("offset", "reason"), [(9, "prelude CRC"), (-1, "message CRC"), (20, "message CRC")])
def test_corruption_is_detected(offset: int, reason: str) -> None:
    frame = bytearray(encode_message([Header.string("a", "b")], b"payload"))
    frame[offset] ^= 0x01
    with pytest.raises(FramingError, match=reason):
        decode_message(bytes(frame))


@pytest.mark.unit
def test_unknown_header_type_and_overlong_header_are_refused() -> None:
    headers = b"\x01a\x0b"  # type 11 does not exist
    lengths = struct.pack(">II", 16 + len(headers), len(headers))
    body = lengths + struct.pack(">I", zlib.crc32(lengths)) + headers
    with pytest.raises(FramingError, match="unknown header type 11"):
        decode_message(body + struct.pack(">I", zlib.crc32(body)))
    with pytest.raises(FramingError, match="1 to 127 bytes"):
        encode_message([Header.string("n" * 128, "v")])


@pytest.mark.unit
def test_reader_reassembles_messages_split_anywhere() -> None:
    stream = encode_message([Header.int32(":message-type", 4)], b"one") + encode_message([], b"two")
    reader = FrameReader()
    got = [m.payload for i in range(len(stream)) for m in reader.feed(stream[i:i + 1])]
    assert got == [b"one", b"two"]


# --- authorization and change detection of the stand-in --------------------------------------------------------

@pytest.mark.unit
@pytest.mark.parametrize(("pattern", "topic", "allowed"), [
    ("facecap/+/status", "facecap/dev1/status", True), ("facecap/+/status", "facecap/dev1/stats", False),
    ("facecap/+/status", "facecap/a/b/status", False), ("facecap/#", "facecap/dev1/status", True),
    ("facecap/#", "facecap", True), ("facecap/*", "facecap/a/b", True), ("*", "anything/at/all", True),
    ("faces/x", "faces/x", True), ("faces/x", "faces/y", False),
])
def test_mqtt_style_resources(pattern: str, topic: str, allowed: bool) -> None:
    assert _topic_matches(pattern, topic) is allowed


@pytest.mark.unit
def test_policy_must_name_the_operation_and_belong_to_the_component() -> None:
    config = {"accessControl": PUBLISH_POLICY}
    publish = "aws.greengrass#PublishToIoTCore"
    assert is_authorized(config, "aws.greengrass.ipc.mqttproxy", publish, "facecap/d/status")
    assert not is_authorized(config, "aws.greengrass.ipc.mqttproxy", "aws.greengrass#SubscribeToIoTCore",
                             "facecap/d/status")
    assert not is_authorized(config, "aws.greengrass.ipc.pubsub", publish, "facecap/d/status")
    assert not is_authorized({}, "aws.greengrass.ipc.mqttproxy", publish, "facecap/d/status")


@pytest.mark.unit
def test_changed_key_paths_lists_each_changed_leaf() -> None:
    old = {"a": {"b": 1, "c": [1]}, "d": "x", "gone": 1}
    new = {"a": {"b": 2, "c": [1]}, "d": "x", "added": {"e": 1}}
    assert changed_key_paths(old, new) == [("a", "b"), ("added",), ("gone",)]


@pytest.mark.unit
def test_outside_greengrass_everything_is_a_no_op() -> None:
    ipc = GreengrassIpc(validator=lambda c: ["never called"], env={})
    ipc.start()
    assert not ipc.enabled and ipc.configuration() == {}
    assert ipc.publish_to_iot_core("t", b"x") is False
    ipc.report_running()
    ipc.close()


# --- the awsiotsdk client against the stand-in ---------------------------------------------------------------

def app(defaults: dict[str, Any], lifecycle: dict[str, Any] | None = None, version: str = "1.0.0") -> BuiltComponent:
    recipe: dict[str, Any] = {
        "RecipeFormatVersion": "2020-01-25", "ComponentName": APP, "ComponentVersion": version,
        "ComponentConfiguration": {"DefaultConfiguration": defaults},
        "Manifests": [{"Platform": {"os": "linux"}}], "Lifecycle": lifecycle or {"Run": "sleep 600"},
    }
    return BuiltComponent(recipe, Path("/nonexistent"))


@pytest.fixture
def nucleus(tmp_path: Path) -> Iterator[Nucleus]:
    nucleus = Nucleus(tmp_path / "gg", extra_env={"PYTHONPATH": str(REPO / "src")})
    nucleus.start_ipc()
    yield nucleus
    nucleus.close()


def as_component(nucleus: Nucleus, token: str | None = None) -> dict[str, str]:
    """The IPC variables the nucleus gives APP's processes, for this test process to speak as APP."""
    return {SOCKET_ENV: str(nucleus.socket_path), TOKEN_ENV: token or nucleus.svcuid(APP)}


def detector_defaults() -> dict[str, Any]:
    return {**default_configuration(component_model("detector")), "python": "python3",
            "accessControl": PUBLISH_POLICY}


def detector_validator() -> Any:
    return model_validator(component_model("detector"), "detector", recipe_keys=("python",))


@pytest.mark.integration
def test_connects_with_its_svcuid_and_is_refused_with_another(nucleus: Nucleus) -> None:
    nucleus.deploy([app({"greeting": "hello", "accessControl": PUBLISH_POLICY})])
    with GreengrassIpc(on_configuration=lambda c: None, env=as_component(nucleus)) as ipc:
        assert ipc.enabled
        assert ipc.configuration() == {"greeting": "hello"}  # accessControl is the nucleus's, not ours
    with pytest.raises(GreengrassError, match="AccessDenied"):
        GreengrassIpc(env=as_component(nucleus, token="not-the-token")).start()


@pytest.mark.integration
def test_close_waits_for_the_disconnect_and_logs_no_error(nucleus: Nucleus, caplog: pytest.LogCaptureFixture) -> None:
    # Closing ends both subscriptions; the SDK hands their on_stream_closed to our worker, which must still
    # be there (else awsiotsdk logs a traceback at every stop of a component), and a close we asked for is
    # no warning either.
    nucleus.deploy([app(detector_defaults())])
    caplog.set_level(logging.INFO, logger="awsiot")
    ipc = GreengrassIpc(validator=detector_validator(), on_configuration=lambda c: None, env=as_component(nucleus))
    ipc.start()
    ipc.close()
    awsiot = [r for r in caplog.records if r.name.startswith("awsiot")]
    assert any(r.getMessage().endswith("disconnected") for r in awsiot), "close() returned before the disconnect"
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


@pytest.mark.integration
def test_a_nucleus_that_goes_away_is_reported(nucleus: Nucleus, caplog: pytest.LogCaptureFixture) -> None:
    nucleus.deploy([app(detector_defaults())])
    with GreengrassIpc(validator=detector_validator(), on_configuration=lambda c: None,
                       env=as_component(nucleus)):
        nucleus.close()  # the IPC server drops every connection, as a nucleus that stops does

        def warnings() -> list[str]:
            return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]

        expected = ["configuration validation subscription closed", "configuration update subscription closed"]
        assert wait_until(lambda: set(expected) <= set(warnings()), 10, 0.02), warnings()
        assert wait_until(lambda: any(w.startswith("Greengrass IPC disconnected") for w in warnings()), 10, 0.02)


@pytest.mark.integration
def test_bad_merge_is_rejected_naming_the_key_and_the_deployment_keeps_the_old_configuration(
        nucleus: Nucleus) -> None:
    nucleus.deploy([app(detector_defaults())])
    delivered: list[dict[str, Any]] = []
    with GreengrassIpc(validator=detector_validator(), on_configuration=delivered.append,
                       env=as_component(nucleus)) as ipc:
        bad = {"detection": {"scoreThreshold": 2.5}, "tracking": {"mode": "sometimes"}}
        with pytest.raises(DeploymentFailed) as failed:
            nucleus.deploy([app(detector_defaults())], {APP: ConfigurationUpdate(merge=bad)})
        assert failed.value.result.status == "FAILED_NO_STATE_CHANGE"
        message = failed.value.result.message
        assert f"name = {APP}" in message
        assert "detection.scoreThreshold:" in message and "tracking.mode:" in message
        assert nucleus.services[APP].configuration["detection"]["scoreThreshold"] == 0.7
        assert ipc.configuration()["detection"]["scoreThreshold"] == 0.7
        assert delivered == []  # nothing changed, so no update event either


@pytest.mark.integration
def test_accepted_change_reaches_the_configuration_callback(nucleus: Nucleus) -> None:
    nucleus.deploy([app(detector_defaults())])
    delivered: list[dict[str, Any]] = []
    with GreengrassIpc(validator=detector_validator(), on_configuration=delivered.append,
                       env=as_component(nucleus)):
        changed = nucleus.deploy([app(detector_defaults())], {APP: ConfigurationUpdate(
            merge={"detection": {"scoreThreshold": 0.55, "nmsThreshold": 0.4}})})
        assert nucleus.deployments[-1].status == "SUCCEEDED" and changed == set()  # no Setenv reads it here
        assert wait_until(lambda: len(delivered) >= 1, 10, 0.02)
        time.sleep(0.2)  # two changed keys are two events: they must still give one delivery
        assert len(delivered) == 1
        assert delivered[0]["detection"]["scoreThreshold"] == 0.55 and delivered[0]["detection"]["nmsThreshold"] == 0.4
        assert "accessControl" not in delivered[0]


@pytest.mark.integration
def test_validation_without_an_answer_in_time_fails_the_deployment(nucleus: Nucleus) -> None:
    nucleus.deploy([app({"level": "INFO"})])

    def slow(configuration: dict[str, Any]) -> list[str]:
        time.sleep(1.0)
        return []

    with GreengrassIpc(validator=slow, env=as_component(nucleus)):
        with pytest.raises(DeploymentFailed, match="Error while waiting for validation report"):
            nucleus.deploy([app({"level": "INFO"})], {APP: ConfigurationUpdate(merge={"level": "DEBUG"})},
                           validation_timeout=0.3)
        assert nucleus.services[APP].configuration == {"level": "INFO"}


@pytest.mark.integration
def test_publish_to_iot_core_only_where_access_control_allows(nucleus: Nucleus) -> None:
    nucleus.deploy([app({"accessControl": PUBLISH_POLICY})])
    with GreengrassIpc(env=as_component(nucleus)) as ipc:
        assert ipc.publish_to_iot_core("facecap/jetson-01/status", b'{"state": "ok"}')
        with pytest.raises(GreengrassError, match="UnauthorizedError"):
            ipc.publish_to_iot_core("facecap/jetson-01/faces", b"{}")
    assert [(m.component, m.topic, m.qos, m.payload) for m in nucleus.ipc.published] == [
        (APP, "facecap/jetson-01/status", "1", b'{"state": "ok"}')]
    assert nucleus.ipc.denied == [(APP, "aws.greengrass#PublishToIoTCore", "facecap/jetson-01/faces")]


@pytest.mark.integration
def test_a_detector_whose_camera_is_not_there_yet_reports_running_and_keeps_trying(
        nucleus: Nucleus, broker: MosquittoServer, model_path: Path, tmp_path: Path) -> None:
    """It waited for a first frame: a camera unplugged at boot (or an IP camera still booting after a site's
    power cut) kept it STARTING past the Startup timeout, and three of those made it BROKEN for good."""
    config = detector_config(tmp_path / "unused.avi", broker, model_path, camera={"source": "/dev/video99"},
                             outbox={"enabled": False})
    log = tmp_path / "detector.log"
    script = f"exec {sys.executable} -m facecap.cli detector >> {log} 2>&1"
    nucleus.deploy([app({**detector_defaults(), **config}, {"Startup": {"Script": script, "Timeout": 60}})])
    nucleus.start(APP)
    try:
        assert nucleus.wait_for_state(APP, "RUNNING", "ERRORED", "BROKEN", timeout=60) == "RUNNING", log.read_text()
        assert "camera v4l2 /dev/video99 unavailable" in log.read_text()  # and it goes on retrying
        assert nucleus.running(APP)
    finally:
        nucleus.stop(APP)


COMPONENT_SCRIPT = """
import sys, time
from facecap.greengrass import GreengrassIpc
with GreengrassIpc() as ipc:
    ipc.report_running()
    if sys.argv[1] == "fault":
        time.sleep(0.2)
        ipc.report_errored()
    time.sleep(60)
"""


@pytest.mark.integration
def test_component_process_reports_running_and_errors_until_broken(nucleus: Nucleus, tmp_path: Path) -> None:
    script = tmp_path / "component.py"
    script.write_text(COMPONENT_SCRIPT, encoding="utf-8")
    # A Startup step keeps the component STARTING until it says it is ready; Run would be RUNNING at once.
    nucleus.deploy([app({}, {"Startup": {"Script": f"exec {sys.executable} {script} ok", "Timeout": 60}})])
    nucleus.start(APP)
    assert nucleus.wait_for_state(APP, "RUNNING", "ERRORED", "BROKEN") == "RUNNING"
    assert nucleus.history[APP] == ["STARTING", "RUNNING"]
    nucleus.stop(APP)

    nucleus.supervise = True  # now the stand-in restarts an ERRORED component, as the nucleus does
    nucleus.deploy([app({}, {"Startup": {"Script": f"exec {sys.executable} {script} fault", "Timeout": 60}})])
    nucleus.start(APP)
    assert nucleus.wait_for_state(APP, "BROKEN", timeout=60) == "BROKEN"
    states = [s for s in nucleus.history[APP] if s in ("RUNNING", "ERRORED", "BROKEN")]
    assert states[-6:] == ["RUNNING", "ERRORED", "RUNNING", "ERRORED", "RUNNING", "BROKEN"]
    assert wait_until(lambda: not nucleus.running(APP), 10, 0.02)


# --- live changes that name files, and a live change the component cannot apply --------------------------

@pytest.mark.unit
@pytest.mark.parametrize("detection", [
    {"modelPath": "/nonexistent/yunet.onnx"},
    {"modelPath": "NOT-A-MODEL"},  # written by the test: a file OpenCV cannot load
    {"haarCascadePath": "/nonexistent/cascade.xml"},
])
def test_a_live_key_must_name_a_file_that_is_on_the_device_now(detection: dict[str, str], tmp_path: Path) -> None:
    # A detection change is applied at once, without a restart: a file it needs that is not here would fail the
    # apply, and the next start, after the deployment had succeeded.
    if detection.get("modelPath") == "NOT-A-MODEL":
        garbage = tmp_path / "model.onnx"
        garbage.write_bytes(b"not an onnx model" * 10)
        detection = {"modelPath": str(garbage)}
    key = next(iter(detection))
    problems = detector_validator()({"detection": detection})
    assert len(problems) == 1 and problems[0].startswith(f"detection.{key}: "), problems


@pytest.mark.unit
def test_a_restart_key_may_name_a_file_that_arrives_with_the_deployment() -> None:
    # The nucleus restarts the component for it, and the start checks the file (and reports ERRORED without it).
    assert detector_validator()({"mqtt": {"passwordFile": "/greengrass/v2/facecap/not-yet"}}) == []


@pytest.mark.integration
def test_a_live_change_that_cannot_be_applied_keeps_the_running_settings(
        nucleus: Nucleus, caplog: pytest.LogCaptureFixture) -> None:
    nucleus.deploy([app(detector_defaults())])
    applied: list[tuple[float, frozenset[str]]] = []
    failures = [ConfigError("detector", [("detection.modelPath", "the file went away")])]

    def apply(config: Any, keys: frozenset[str]) -> None:
        if failures:
            raise failures.pop()
        applied.append((config.detection.score_threshold, keys))

    component = ComponentIpc(DetectorConfig, "detector", env=as_component(nucleus))
    component.load(None)
    component.on_change(apply)
    try:
        nucleus.deploy([app(detector_defaults())], {APP: ConfigurationUpdate(
            merge={"detection": {"scoreThreshold": 0.9}})})

        def errors() -> list[logging.LogRecord]:
            return [r for r in caplog.records if r.levelno >= logging.ERROR]

        assert wait_until(lambda: errors() != [], 10, 0.02)
        [error] = errors()
        assert "detection.scoreThreshold=0.9" in error.getMessage() and "the file went away" in error.getMessage()
        assert error.exc_info is None  # a user's change, not a bug: one line, no traceback
        assert component.config is not None and component.config.detection.score_threshold == 0.7
        # The next deployment applies its own change and retries the one that failed.
        nucleus.deploy([app(detector_defaults())], {APP: ConfigurationUpdate(merge={"tracking": {"minHits": 2}})})
        assert wait_until(lambda: applied != [], 10, 0.02)
        assert applied == [(0.9, frozenset({"detection", "tracking"}))]
        assert component.config is not None and component.config.tracking.min_hits == 2
    finally:
        component.close()


@pytest.mark.integration
def test_keys_a_newer_version_left_behind_are_ignored_and_do_not_block_later_deployments(
        nucleus: Nucleus, caplog: pytest.LogCaptureFixture) -> None:
    """The nucleus never removes a key, so one a newer version added stays when an older version is deployed
    again (a fleet rolled back by deploying the previous version). That version used to refuse it and could
    not start. A key that a deployment adds or changes is still a mistake, and refused."""
    defaults = detector_defaults()
    defaults["mqtt"]["newKey"] = 5  # what version N+1 added to its defaults
    defaults["retiredKey"] = "x"
    nucleus.deploy([app(defaults)])
    component = ComponentIpc(DetectorConfig, "detector", env=as_component(nucleus))
    try:
        config = component.load(None)
        assert config.mqtt.host == "127.0.0.1"
        [warning] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert warning.endswith("mqtt.newKey, retiredKey"), warning
        nucleus.deploy([app(defaults)], {APP: ConfigurationUpdate(merge={"tracking": {"minHits": 2}})})
        assert wait_until(lambda: component.config is not None and component.config.tracking.min_hits == 2,
                          10, 0.02)
        for mistake, key in (({"tracking": {"minHitz": 2}}, "tracking.minHitz"),
                             ({"mqtt": {"newKey": 6}}, "mqtt.newKey")):
            with pytest.raises(DeploymentFailed) as failed:
                nucleus.deploy([app(defaults)], {APP: ConfigurationUpdate(merge=mistake)})
            assert f"{key}: unknown key" in failed.value.result.message
    finally:
        component.close()
