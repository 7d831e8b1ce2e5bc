"""`facecap detector` on a video of people entering, moving and leaving, publishing to a real Mosquitto."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from facecap.contract import FaceMessage, parse_message
from facecap.detector.config import DetectionSettings
from facecap.detector.detection import YuNetDetector
from facecap.detector.scaling import Scaling
from facecap.devkit.servers import MosquittoServer
from tests.support.helpers import Collector, subscriber

from .conftest import DetectorRunner, detector_config
from .scenes import Scene, match_visit

pytestmark = pytest.mark.integration

PREFIX = "faces"


def received_faces(collector: Collector) -> list[FaceMessage]:
    return [parse_message(m.topic, m.payload, m.content_type, m.user_properties, topic_prefix=PREFIX)
            for m in collector.messages if m.topic.startswith(PREFIX + "/")]


def crop_shows_a_face(message: FaceMessage, model_path: Path) -> bool:
    image = cv2.imdecode(np.frombuffer(message.payload, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None
    # Give the face room: YuNet looks for faces, not for images that are all face.
    framed = cv2.copyMakeBorder(image, 40, 40, 40, 40, cv2.BORDER_CONSTANT, value=(127, 127, 127))
    return len(YuNetDetector(str(model_path), scaling=Scaling(width=0)).detect(framed)) > 0


def test_best_shot_mode_sends_one_message_per_person_per_visit(
    broker: MosquittoServer, street: Scene, street_video: Path, model_path: Path, run_detector: DetectorRunner,
) -> None:
    collector = Collector()
    listener = subscriber(broker, "#", collector)
    try:
        detector = run_detector(detector_config(street_video, broker, model_path))
        assert detector.wait(90) == 0, detector.output()
        assert collector.wait_for(len(street.visits) + 2, timeout=10), detector.output()
    finally:
        listener.stop()

    faces = received_faces(collector)
    visits = [match_visit(street, face.frame or 0, face.bbox or (0, 0, 1, 1)) for face in faces]
    print(f"best-shot messages: {[(f.frame, f.bbox, f.score) for f in faces]} -> visits {visits}")
    assert sorted(v for v in visits if v is not None) == list(range(len(street.visits))), detector.output()
    assert len(faces) == len(street.visits)
    assert len({face.track_id for face in faces}) == len(faces)
    for face, visit in zip(faces, visits, strict=True):
        assert (face.device_id, face.camera_id, face.detector, face.content_type) == (
            "jetson-test", "street", "yunet", "image/jpeg")
        assert face.score is not None and face.score >= 0.7
        # The best shot of a person who walked in and out is a whole face, not one cut by the edge.
        assert visit is not None and street.fully_visible(street.visits[visit], face.frame or 0)
        assert crop_shows_a_face(face, model_path), f"no face in the crop of frame {face.frame}"

    statuses = [m.payload for m in collector.messages if m.topic == "facecap/jetson-test/detector/status"]
    assert statuses[0] == b"online" and statuses[-1] == b"offline"
    final = detector.stats()[-1]
    assert (final["frames"], final["published"], final["dropped"]) == (str(street.frames), "4", "0")


def test_first_shot_sends_a_first_and_a_best_shot_per_person(
    broker: MosquittoServer, street: Scene, street_video: Path, model_path: Path, run_detector: DetectorRunner,
) -> None:
    collector = Collector()
    listener = subscriber(broker, f"{PREFIX}/#", collector)
    try:
        detector = run_detector(detector_config(street_video, broker, model_path, tracking={"firstShot": True}))
        assert detector.wait(90) == 0, detector.output()
        assert collector.wait_for(2 * len(street.visits), timeout=10), detector.output()
    finally:
        listener.stop()

    faces = received_faces(collector)
    print(f"first/best shots: {[(f.shot, f.track_id, f.frame) for f in faces]}")
    by_track: dict[str, list[FaceMessage]] = {}
    for face in faces:
        by_track.setdefault(face.track_id or "", []).append(face)
    assert len(by_track) == len(street.visits) and "" not in by_track
    for shots in by_track.values():
        assert [face.shot for face in shots] == ["first", "best"]
        first, best = shots
        assert first.face_id != best.face_id
        # The first shot went out while the person was still in view: before the track's last frame.
        visit = match_visit(street, first.frame or 0, first.bbox or (0, 0, 1, 1))
        assert visit is not None and match_visit(street, best.frame or 0, best.bbox or (0, 0, 1, 1)) == visit
        assert (first.frame or 0) <= street.visits[visit].first + 10 < street.visits[visit].last
        assert street.fully_visible(street.visits[visit], first.frame or 0)
        assert (first.score or 0) >= 0.8 and crop_shows_a_face(first, model_path)


def test_every_mode_sends_one_message_per_detection(
    broker: MosquittoServer, street: Scene, street_video: Path, model_path: Path, run_detector: DetectorRunner,
) -> None:
    # What the detector should find: the same model, run here on the same decoded frames.
    reference = YuNetDetector(str(model_path), scaling=DetectionSettings().scaling())
    capture = cv2.VideoCapture(str(street_video))
    expected: list[tuple[int, tuple[float, float, float, float]]] = []
    frame = 0
    while True:
        ok, image = capture.read()
        if not ok:
            break
        expected += [(frame, d.bbox) for d in reference.detect(image) if min(d.bbox[2:]) >= 40]
        frame += 1
    capture.release()

    collector = Collector()
    listener = subscriber(broker, f"{PREFIX}/#", collector)
    try:
        config = detector_config(street_video, broker, model_path,
                                 tracking={"mode": "every", "everyMinIntervalSeconds": 0}, output={"format": "png"})
        detector = run_detector(config)
        assert detector.wait(90) == 0, detector.output()
        collector.wait_for(len(expected), timeout=10)
    finally:
        listener.stop()

    faces = received_faces(collector)
    print(f"every mode: {len(faces)} messages for {len(expected)} detections in {street.frames} frames")
    assert len(faces) == len(expected)
    assert sorted(f.frame or 0 for f in faces) == sorted(frame for frame, _ in expected)
    assert all(face.content_type == "image/png" for face in faces)
    # Each visit's track yields a message for (nearly) every frame the face is wholly in view.
    for index, visit in enumerate(street.visits):
        frames_seen = {f.frame for f in faces if match_visit(street, f.frame or 0, f.bbox or (0, 0, 1, 1)) == index}
        in_view = {n for n in range(street.frames) if street.fully_visible(visit, n)}
        assert len(in_view & frames_seen) >= 0.9 * len(in_view)
    for face in faces[:: max(1, len(faces) // 10)]:
        assert crop_shows_a_face(face, model_path)
