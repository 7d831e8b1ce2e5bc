"""End to end: the built Greengrass components, run by the nucleus stand-in with their real recipes, on the
rendered sample video, through real brokers, the bridge and the processor into the real S3 server — and the
same pipeline under the faults that lose messages in the K3s predecessors: a cloud broker restart, a 30 s
uplink cut, a processor killed with SIGKILL, and the S3 server down for 20 s. Each fault test prints its
lost and duplicate counts; both must be 0."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import cv2
import numpy as np
import pytest

from facecap.devkit.demo.inventory import Inventory, read_body, read_inventory
from facecap.devkit.demo.pipeline import Launched, LocalPipeline, PipelineSettings
from facecap.devkit.demo.tap import Tap
from facecap.devkit.demo.video import DEFAULT_VISITS, render_video
from facecap.polling import wait_until

from .greengrass_harness import BuiltComponent, ConfigurationUpdate, HarnessError, Nucleus

pytestmark = pytest.mark.e2e
T = TypeVar("T")

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


@pytest.fixture(scope="module")
def sample_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("video") / "sample.avi"
    render_video(path)
    return path


@pytest.fixture
def pipeline(tmp_path: Path, installed: Nucleus, built: dict[str, BuiltComponent]) -> Iterator[LocalPipeline]:
    settings = PipelineSettings(workdir=tmp_path / "pipeline", store="s3", cuttable_link=True,
                                launcher=HarnessLauncher(installed, built),
                                edge_dir=installed.work_path(RECIPE_NAMES["broker"]) / "local")
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
    tap = Tap(pipeline.edge_settings("monitor"), f"e2e-tap-{pipeline.edge_port}")
    tap.start()
    detector = pipeline.start_detector(str(sample_video))
    assert wait_until(lambda: not detector.running, timeout=90), "the detector did not finish the video"
    assert detector.process is not None and detector.process.returncode == 0, detector.log_text()[-2000:]
    published = tap.ids()
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


def run_with_fault(pipeline: LocalPipeline, video: Path, fault: Callable[[LocalPipeline], None]) -> FaultOutcome:
    """Faces keep coming (every detection, looping video) while `fault` happens; then wait until every face
    the detector published is stored, and take stock."""
    tap = Tap(pipeline.edge_settings("monitor"), f"e2e-tap-{pipeline.edge_port}")
    tap.start()
    pipeline.settings.detector_overrides = {
        "camera": {"loop": True},
        "tracking": {"mode": "every", "everyMinIntervalSeconds": 0.25},
    }
    detector = pipeline.start_detector(str(video))
    assert wait_until(lambda: len(stored_ids(pipeline)) >= 5, timeout=60), "nothing stored before the fault"
    fault(pipeline)
    time.sleep(8)  # faces keep coming after the fault is over, too
    detector.stop()
    published = tap.ids()
    wait_until(lambda: stored_ids(pipeline) >= published, timeout=120, interval=1.0)
    tap.client.stop()
    found = inventory(pipeline)
    per_face = Counter(face.face_id for face in found.faces)
    return FaultOutcome(published=published, seen=tap.seen, per_face=per_face,
                        quarantined=[q.key for q in found.quarantined])


@dataclass(frozen=True)
class FaultOutcome:
    published: set[str]
    seen: int  # messages seen at the edge: a face sent again counts again
    per_face: Counter[str]  # stored objects per face id
    quarantined: list[str]

    @property
    def lost(self) -> list[str]:
        return sorted(self.published - set(self.per_face))

    @property
    def duplicated(self) -> list[str]:
        return sorted(face_id for face_id, count in self.per_face.items() if count > 1)


def _part(part: T | None) -> T:
    assert part is not None, "the pipeline part is not running"
    return part


def _restart_cloud(local: LocalPipeline) -> None:
    _part(local.cloud).restart()


def _cut_uplink(local: LocalPipeline) -> None:
    link = _part(local.link)
    link.cut()
    time.sleep(30)
    link.restore()


def _kill_processor(local: LocalPipeline) -> None:
    local.components["processor"].kill()
    time.sleep(3)
    local.restart("processor")


def _stop_s3(local: LocalPipeline) -> None:
    s3 = _part(local.s3)
    s3.stop()
    time.sleep(20)
    s3.start()


FAULTS: dict[str, Callable[[LocalPipeline], None]] = {
    "cloud broker restarted": _restart_cloud,
    "uplink cut for 30 s": _cut_uplink,
    "processor SIGKILL": _kill_processor,
    "S3 down for 20 s": _stop_s3,
}


@pytest.mark.parametrize("name", list(FAULTS))
def test_a_fault_loses_nothing(pipeline: LocalPipeline, sample_video: Path, name: str) -> None:
    outcome = run_with_fault(pipeline, sample_video, FAULTS[name])
    stored = sum(outcome.per_face.values())
    print(f"{name}: published {len(outcome.published)} (messages seen at the edge {outcome.seen}), "
          f"stored {stored}, lost {len(outcome.lost)}, duplicate objects {len(outcome.duplicated)}")
    assert len(outcome.published) >= 15, f"only {len(outcome.published)} faces published around the fault"
    assert not outcome.lost, f"{len(outcome.lost)} of {len(outcome.published)} published faces never stored: " \
                             f"{outcome.lost}"
    assert not outcome.duplicated, f"faces stored more than once: {outcome.duplicated}"
    assert not outcome.quarantined, f"quarantined: {outcome.quarantined}"
