"""End to end: the built Greengrass components, run by the nucleus stand-in with their real recipes, on the
rendered sample video, through real brokers, the bridge and the processor into the real S3 server — and the
same pipeline under the faults that lose messages in the K3s predecessors: a cloud broker restart, a 30 s
uplink cut, a processor killed with SIGKILL, and the S3 server down for 20 s. Each fault test prints its
lost and duplicate counts; both must be 0."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from facecap.contract import parse_message
from facecap.devkit.demo.inventory import Inventory, read_body, read_inventory
from facecap.devkit.demo.pipeline import Launched, LocalPipeline, PipelineSettings, wait_until
from facecap.devkit.demo.video import DEFAULT_VISITS, render_video
from facecap.errors import ContractError
from facecap.mqtt import MqttClient, MqttSettings, ReceivedMessage

from .greengrass_harness import BuiltComponent, ConfigurationUpdate, HarnessError, Nucleus

pytestmark = pytest.mark.e2e

RECIPE_NAMES = {"broker": "com.facecap.EdgeBroker", "logger": "com.facecap.FaceLogger",
                "detector": "com.facecap.FaceDetector"}


class HarnessLauncher:
    """Starts edge components the way a deployment does: the pipeline's configuration becomes the
    deployment's configuration update (RESET to the defaults, then MERGE), the nucleus stand-in interpolates
    the built recipe with it, installs when the Install step changed, and runs the Run step."""

    def __init__(self, nucleus: Nucleus, built: Mapping[str, BuiltComponent]) -> None:
        self.nucleus = nucleus
        self.built = built
        self.updates: dict[str, ConfigurationUpdate] = {}

    def __call__(self, component: str, config: Mapping[str, Any], workdir: Path, log: Path,
                 env: Mapping[str, str]) -> Launched:
        name = RECIPE_NAMES[component]
        self.updates[name] = ConfigurationUpdate(merge=dict(config), reset=("",))
        self.nucleus.deploy(self.built.values(), self.updates)
        if name in self.nucleus.reinstall:
            result = self.nucleus.install(name)
            if not result.ok:
                raise HarnessError(f"{name} {result.step} failed:\n{result.output}")
        process = self.nucleus.start(name)
        return Launched(process, self.nucleus.log_path(name), self.nucleus.services[name].run_log_start)


class EdgeTap:
    """A subscriber on the edge broker: the ground truth of what the detector published."""

    def __init__(self, port: int) -> None:
        self.ids: list[str] = []
        self.invalid = 0
        self._lock = threading.Lock()
        self.client = MqttClient(MqttSettings(host="127.0.0.1", port=port), f"e2e-tap-{port}",
                                 on_message=self._on_message)
        self.client.start()
        self.client.subscribe("faces/#")

    def _on_message(self, message: ReceivedMessage) -> None:
        try:
            face = parse_message(message.topic, message.payload, message.content_type, message.user_properties)
        except ContractError:
            with self._lock:
                self.invalid += 1
            return
        with self._lock:
            self.ids.append(face.face_id)

    def unique(self) -> set[str]:
        with self._lock:
            return set(self.ids)


@pytest.fixture(scope="module")
def sample_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("video") / "sample.avi"
    render_video(path)
    return path


@pytest.fixture
def pipeline(tmp_path: Path, installed: Nucleus, built: dict[str, BuiltComponent]) -> Iterator[LocalPipeline]:
    settings = PipelineSettings(workdir=tmp_path / "pipeline", store="s3", cuttable_link=True,
                                launcher=HarnessLauncher(installed, built))
    local = LocalPipeline(settings)
    local.start_cloud()
    local.start_processor()
    local.start_edge_broker()
    yield local
    local.stop_all()
    installed.stop_all()


def inventory(pipeline: LocalPipeline) -> Inventory:
    return read_inventory(pipeline.store_url, s3_client=pipeline.s3_client())


def stored_ids(pipeline: LocalPipeline) -> set[str]:
    return {face.face_id for face in inventory(pipeline).faces}


def test_faces_seen_by_the_detector_are_stored_once_per_visit(pipeline: LocalPipeline, sample_video: Path,
                                                               model_path: Path) -> None:
    logger = pipeline.start_logger()
    tap = EdgeTap(pipeline.edge_port)
    detector = pipeline.start_detector(str(sample_video))
    assert wait_until(lambda: not detector.running, timeout=90), "the detector did not finish the video"
    assert detector.process is not None and detector.process.returncode == 0, detector.log_text()[-2000:]
    published = tap.unique()
    assert wait_until(lambda: stored_ids(pipeline) >= published, timeout=60)
    found = inventory(pipeline)
    print(f"visits {len(DEFAULT_VISITS)}, published {len(published)}, stored {len(found.faces)}")
    assert len(published) == len(DEFAULT_VISITS)  # one message per person per visit
    assert {face.face_id for face in found.faces} == published
    assert len(found.faces) == len(published) and not found.quarantined
    yunet = cv2.FaceDetectorYN.create(str(model_path), "", (320, 320), 0.6)
    for face in found.faces:
        assert face.key.startswith(f"{pipeline.settings.device_id}/")
        assert face.key.endswith(f"_{face.face_id}.jpg")
        assert face.content_type == "image/jpeg"
        assert face.metadata["camera-id"] == "cam0" and face.metadata["schema"] == "facecap/1"
        crop = cv2.imdecode(np.frombuffer(read_body(pipeline.store_url, face.key, pipeline.s3_client()),
                                          np.uint8), cv2.IMREAD_COLOR)
        assert crop is not None, f"{face.key} is not a decodable image"
        yunet.setInputSize((crop.shape[1], crop.shape[0]))
        _, faces = yunet.detect(crop)
        assert faces is not None and len(faces) >= 1, f"no face in the stored crop {face.key}"
    assert wait_until(lambda: logger.log_text().count("face-id=") >= len(published), timeout=10)
    tap.client.stop()


def run_with_fault(pipeline: LocalPipeline, video: Path, fault: Callable[[LocalPipeline], None],
                   name: str) -> None:
    """Faces keep coming (every detection, looping video) while `fault` happens; then every face the
    detector published must be stored exactly once."""
    tap = EdgeTap(pipeline.edge_port)
    pipeline.settings.detector_overrides = {
        "camera": {"loop": True},
        "tracking": {"mode": "every", "everyMinIntervalSeconds": 0.25},
    }
    detector = pipeline.start_detector(str(video))
    assert wait_until(lambda: len(stored_ids(pipeline)) >= 5, timeout=60), "nothing stored before the fault"
    fault(pipeline)
    time.sleep(8)  # faces keep coming after the fault is over, too
    detector.stop()
    published = tap.unique()
    assert wait_until(lambda: stored_ids(pipeline) >= published, timeout=120, interval=1.0)
    found = inventory(pipeline)
    per_face = Counter(face.face_id for face in found.faces)
    lost = len(published - set(per_face))
    duplicates = sum(count - 1 for count in per_face.values())
    print(f"{name}: published {len(published)} (messages seen at the edge {len(tap.ids)}), "
          f"stored {len(found.faces)}, lost {lost}, duplicate objects {duplicates}")
    tap.client.stop()
    assert len(published) >= 15
    assert lost == 0
    assert duplicates == 0
    assert not found.quarantined


def test_cloud_broker_restart_loses_nothing(pipeline: LocalPipeline, sample_video: Path) -> None:
    def restart_cloud(local: LocalPipeline) -> None:
        assert local.cloud is not None
        local.cloud.restart()

    run_with_fault(pipeline, sample_video, restart_cloud, "cloud broker restarted")


def test_uplink_cut_for_30_s_loses_nothing(pipeline: LocalPipeline, sample_video: Path) -> None:
    def cut_link(local: LocalPipeline) -> None:
        assert local.link is not None
        local.link.cut()
        time.sleep(30)
        local.link.restore()

    run_with_fault(pipeline, sample_video, cut_link, "uplink cut for 30 s")


def test_processor_killed_and_restarted_loses_nothing(pipeline: LocalPipeline, sample_video: Path) -> None:
    def kill_processor(local: LocalPipeline) -> None:
        local.components["processor"].kill()
        time.sleep(3)
        local.restart("processor")

    run_with_fault(pipeline, sample_video, kill_processor, "processor SIGKILL")


def test_s3_down_for_20_s_loses_nothing(pipeline: LocalPipeline, sample_video: Path) -> None:
    def stop_s3(local: LocalPipeline) -> None:
        assert local.s3 is not None
        local.s3.stop()
        time.sleep(20)
        local.s3.start()

    run_with_fault(pipeline, sample_video, stop_s3, "S3 down for 20 s")
