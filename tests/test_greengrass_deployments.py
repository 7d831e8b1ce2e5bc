"""Deployments of the built components through the nucleus stand-in, which serves real Greengrass IPC to the
unmodified awsiotsdk client inside each component: RUNNING only once ready, a bad merge rejected with the
previous configuration kept running, and live changes applied without a restart.

One edge (EdgeBroker without a cloud host, FaceDetector on a looping video, FaceLogger) runs for the whole
module; each test deploys a change to it, as an operator would.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from facecap.greengrass.policies import AUTHORIZED
from facecap.polling import wait_until

from .greengrass_harness import BuiltComponent, ConfigurationUpdate, DeploymentFailed, Nucleus
from .support.helpers import Collector
from .test_greengrass_components import (
    BROKER,
    DETECTOR,
    LOGGER,
    STACK,
    edge_client,
    face_photo,
    wait_for_text,
    write_video,
)

pytestmark = pytest.mark.integration
DEVICE = "jetson-deploy"
EDGE = (BROKER, DETECTOR, LOGGER, STACK)


@pytest.fixture(scope="module")
def edge(installed: Nucleus, built: dict[str, BuiltComponent], shared_dir: Path,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nucleus]:
    nucleus = installed
    nucleus.stop_all()
    video = tmp_path_factory.mktemp("video") / "visit.avi"
    write_video(face_photo(shared_dir), video)
    # Only the bundle and the device id: no bridge.host yet, as before the cloud is set up. No mqtt settings:
    # the detector and the logger find the EdgeBroker's socket and their identities by themselves.
    updates = {
        BROKER: ConfigurationUpdate(reset=[""], merge={"deviceId": DEVICE}),
        DETECTOR: ConfigurationUpdate(reset=[""], merge={
            "deviceId": DEVICE, "cameraId": "door", "statsIntervalSeconds": 1,
            "camera": {"source": str(video), "kind": "file", "loop": True, "maxFps": 10}}),
        LOGGER: ConfigurationUpdate(reset=[""], merge={"deviceId": DEVICE}),
    }
    nucleus.deploy([built[name] for name in EDGE], updates)
    try:
        assert nucleus.start_all(dependency_timeout=60) == []  # nobody left waiting for the broker
        for name in (BROKER, DETECTOR, LOGGER):
            nucleus.wait_for_state(name, "RUNNING", timeout=90)
        yield nucleus
    finally:
        nucleus.stop_all()


def pid(nucleus: Nucleus, name: str) -> int:
    process = nucleus.services[name].process
    assert process is not None and process.poll() is None, nucleus.run_log_text(name)[-2000:]
    return process.pid


def test_running_is_reported_only_once_ready_and_the_broker_runs_local_only(edge: Nucleus) -> None:
    for name, what in ((BROKER, "the listener on"), (DETECTOR, "the local broker, the cameras opening"),
                       (LOGGER, "the subscription to faces/#")):
        # STARTING until the component itself said it is ready (a Startup step, not Run).
        assert edge.history[name][-2:] == ["STARTING", "RUNNING"], edge.history[name]
        assert f"ready ({what}" in wait_for_text(edge, name, ["reported RUNNING"])
    assert "LOCAL-ONLY" in edge.run_log_text(BROKER)


def test_a_bad_merge_is_rejected_and_the_previous_configuration_keeps_running(
        edge: Nucleus, built: dict[str, BuiltComponent]) -> None:
    before, process = edge.configuration_of(DETECTOR), pid(edge, DETECTOR)
    bad = ConfigurationUpdate(merge={"detection": {"scoreThreshold": 1.5}, "tracking": {"minHits": 0}})
    with pytest.raises(DeploymentFailed) as failed:
        edge.deploy([built[name] for name in EDGE], {DETECTOR: bad})
    result = failed.value.result
    assert result.status == "FAILED_NO_STATE_CHANGE"
    # The component's answer names each bad key.
    assert "detection.scoreThreshold" in result.message and "tracking.minHits" in result.message, result.message
    assert edge.configuration_of(DETECTOR) == before
    assert pid(edge, DETECTOR) == process and edge.state(DETECTOR) == "RUNNING"
    log = wait_for_text(edge, DETECTOR, ["REJECTED"])
    assert "detection.scoreThreshold" in log


def test_a_live_score_threshold_change_takes_effect_without_a_restart(
        edge: Nucleus, built: dict[str, BuiltComponent]) -> None:
    process = pid(edge, DETECTOR)
    changed = edge.deploy([built[name] for name in EDGE],
                          {DETECTOR: ConfigurationUpdate(merge={"detection": {"scoreThreshold": 0.85}})})
    assert changed == set()  # the lifecycle is the same: the nucleus restarts nothing
    log = wait_for_text(edge, DETECTOR, ["applied live, without a restart: detection.scoreThreshold=0.85",
                                         "score_threshold=0.85"])
    assert "score_threshold=0.85" in log, log[-2000:]
    assert pid(edge, DETECTOR) == process and edge.state(DETECTOR) == "RUNNING"
    assert edge.configuration_of(DETECTOR)["detection"]["scoreThreshold"] == 0.85  # type: ignore[index]


def test_a_worker_count_change_restarts_the_detector_instead_of_claiming_a_live_apply(
        edge: Nucleus, built: dict[str, BuiltComponent]) -> None:
    # The worker pool is built once, at start: detection.workers is in the lifecycle although detection is live.
    components = [built[name] for name in EDGE]
    try:
        changed = edge.deploy(components, {DETECTOR: ConfigurationUpdate(merge={"detection": {"workers": 2}})})
        assert changed == {DETECTOR}
    finally:
        edge.deploy(components, {DETECTOR: ConfigurationUpdate(merge={"detection": {"workers": 0}})})


def test_the_broker_reloads_queue_limits_without_restarting_its_dependants(
        edge: Nucleus, built: dict[str, BuiltComponent]) -> None:
    processes = {name: pid(edge, name) for name in (BROKER, DETECTOR, LOGGER)}
    changed = edge.deploy([built[name] for name in EDGE],
                          {BROKER: ConfigurationUpdate(merge={"queue": {"maxQueuedMessages": 5000}})})
    assert changed == set()
    log = wait_for_text(edge, BROKER, ["reloaded (SIGHUP)", "Reloading config"])
    assert "Reloading config" in log, log[-2000:]
    assert "max_queued_messages 5000" in (edge.work_path(BROKER) / "mosquitto.conf").read_text()
    assert {name: pid(edge, name) for name in processes} == processes


def test_stats_reach_the_local_broker_and_iot_core_as_the_access_control_allows(
        edge: Nucleus, built: dict[str, BuiltComponent]) -> None:
    # The built recipe allows exactly the authorized operations the code uses (facecap.greengrass.policies).
    for name, command in ((BROKER, "broker"), (DETECTOR, "detector"), (LOGGER, "logger")):
        defaults = built[name].recipe["ComponentConfiguration"]["DefaultConfiguration"]
        granted = {(service, operation, resource)
                   for service, policies in defaults.get("accessControl", {}).items()
                   for policy in policies.values()
                   for operation in policy["operations"] for resource in policy["resources"]}
        assert granted == {(a.service, a.operation, a.resource) for a in AUTHORIZED[command]}
    stats = Collector()
    # As an operator's mosquitto_sub on the device would: the socket, the read-only monitor identity.
    listener = edge_client(edge, "monitor", "stats-reader", on_message=stats)
    listener.start()
    try:
        listener.subscribe(f"facecap/{DEVICE}/+/stats")
        assert stats.wait_for(1, timeout=30)  # retained, and refreshed every second
    finally:
        listener.stop()
    figures = json.loads(stats.messages[0].payload)
    assert {"at", "fps", "faces", "published", "dropped", "connected"} <= set(figures)
    # iotCoreStats needs a restart (it is in the lifecycle); then the stats go to IoT Core too, allowed.
    changed = edge.deploy([built[name] for name in EDGE],
                          {DETECTOR: ConfigurationUpdate(merge={"iotCoreStats": True})})
    assert changed == {DETECTOR}
    edge.stop(DETECTOR)
    edge.start(DETECTOR)
    assert wait_until(lambda: any(m.topic == f"facecap/{DEVICE}/detector/stats" for m in edge.ipc.published), 30)
    assert edge.ipc.denied == []
    assert edge.wait_for_state(DETECTOR, "RUNNING", timeout=60) == "RUNNING"
