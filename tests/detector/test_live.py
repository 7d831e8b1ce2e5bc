"""A live configuration change (Greengrass SubscribeToConfigurationUpdate) reaches every camera and every
detection worker of a detector with several cameras, without a restart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from facecap.config import load_config
from facecap.detector.config import DetectorConfig
from facecap.detector.runner import DetectorRunner

pytestmark = pytest.mark.unit


def test_a_live_change_reaches_every_camera_and_every_worker(street_video: Path, model_path: Path,
                                                             tmp_path: Path) -> None:
    cameras = [{"cameraId": "door", "source": str(street_video)}, {"cameraId": "yard", "source": str(street_video)}]
    # The client is only built, never connected. The outbox goes to tmp_path, not `outbox/` in the working
    # folder (the default outside Greengrass).
    data: dict[str, Any] = {"deviceId": "jetson-test", "cameras": cameras, "outbox": {"dir": str(tmp_path)},
                            "mqtt": {"socketPath": "", "host": "127.0.0.1", "port": 1}}
    detection = {"modelPath": str(model_path), "workers": 2}
    runner = DetectorRunner.build(load_config(DetectorConfig, "detector", {**data, "detection": detection}))
    before = list(runner.detectors)
    changed = load_config(DetectorConfig, "detector", {
        **data, "detection": {**detection, "scoreThreshold": 0.85, "minFaceSize": 40},
        "tracking": {"minHits": 3, "edgeMargin": 7}})
    runner.apply_live(changed, frozenset({"detection", "tracking"}))
    assert len(runner.detectors) == 2
    assert not set(map(id, runner.detectors)) & set(map(id, before))  # every worker's model replaced
    # The new threshold is in every worker's model itself (cv2.FaceDetectorYN).
    thresholds = [d._net.getScoreThreshold() for d in runner.detectors]  # type: ignore[attr-defined]
    assert thresholds == pytest.approx([0.85, 0.85])
    for feed in runner.feeds:
        assert feed.loop.detector is runner.detectors[0]
        assert feed.loop.min_face_size == 40 and feed.loop.edge_margin == 7
        assert feed.loop.tracker.settings.min_hits == 3
    assert runner.config.detection.score_threshold == 0.85
    assert runner.outbox is not None and runner.outbox.outbox.path.parent == tmp_path
    runner.outbox.outbox.close()
