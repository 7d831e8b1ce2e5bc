"""The broker goes away for 10 s while the detector runs: it keeps capturing within its memory bound,
counts what it drops, publishes again when the broker is back, and exits 0 on SIGTERM."""

from __future__ import annotations

import time
from pathlib import Path

import psutil
import pytest

from facecap.devkit.servers import MosquittoServer, free_port
from tests.support.helpers import Collector, subscriber

from .conftest import DetectorProcess, DetectorRunner, detector_config

pytestmark = pytest.mark.integration

MEMORY_BOUND_MB = 250
MAX_IN_FLIGHT = 20


def wait_for_stats(detector: DetectorProcess, predicate: str, timeout: float = 30) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for stats in reversed(detector.stats()):
            if eval(predicate, {}, {k: int(v) if v.isdigit() else v for k, v in stats.items()}):  # noqa: S307 - test-made text
                return stats
        time.sleep(0.2)
    raise AssertionError(f"no stats line with {predicate}:\n{detector.output()[-4000:]}")


def test_broker_outage(mosquitto: object, street_video: Path, model_path: Path, run_detector: DetectorRunner) -> None:
    broker: MosquittoServer = mosquitto()  # type: ignore[operator]
    collector = Collector()
    listener = subscriber(broker, "faces/#", collector)
    config = detector_config(
        street_video, broker, model_path,
        camera={"source": str(street_video), "loop": True, "maxFps": 10},
        tracking={"mode": "every", "everyMinIntervalSeconds": 0},
        mqtt={"maxInFlight": MAX_IN_FLIGHT},
        # The memory bound of the path without an outbox; with one, faces wait on disk instead of being
        # dropped (tests/test_outbox_delivery.py).
        outbox={"enabled": False},
    )
    detector = run_detector(config)
    process = psutil.Process(detector.pid)
    try:
        assert collector.wait_for(5, timeout=30), detector.output()
        before = wait_for_stats(detector, "published >= 5")

        broker.stop()
        outage_start = time.monotonic()
        peak_rss = 0
        samples: list[dict[str, str]] = []
        while time.monotonic() - outage_start < 10:
            peak_rss = max(peak_rss, process.memory_info().rss)
            time.sleep(0.25)
        samples = detector.stats()
        during = samples[-1]
        received_during_outage = len(collector.messages)
        broker.start()

        # Still capturing: frames went on at the capped rate while the broker was away.
        assert int(during["frames"]) - int(before["frames"]) >= 50, during
        assert during["connected"] == "no"
        # Bounded: never more than maxInFlight waiting, the rest dropped and counted.
        assert max(int(s["in_flight"]) for s in samples) <= MAX_IN_FLIGHT
        assert int(during["dropped"]) > 0
        print(f"outage: peak RSS {peak_rss / 2**20:.0f} MB, dropped {during['dropped']}, "
              f"frames {int(during['frames']) - int(before['frames'])} during 10 s")
        assert peak_rss <= MEMORY_BOUND_MB * 2**20

        # Back: the queued faces and new ones arrive.
        resumed = int(during["published"]) + MAX_IN_FLIGHT
        after = wait_for_stats(detector, f"connected == 'yes' and published > {resumed}")
        assert collector.wait_for(received_during_outage + MAX_IN_FLIGHT + 5, timeout=30)
        assert "disconnected from" in detector.output()
    finally:
        listener.stop()
        code = detector.terminate()
    assert code == 0, detector.output()[-3000:]
    final = detector.stats()[-1]
    assert int(final["published"]) >= int(after["published"])
    assert final["in_flight"] == "0"


def test_a_network_camera_that_stays_down_does_not_flood_the_log(
        mosquitto: object, street_video: Path, model_path: Path, run_detector: DetectorRunner) -> None:
    """Each reopen of a camera that is down printed two OpenCV warnings to the component log (past
    facecap's once-a-minute reminder: 8 600 lines a day at the default
    backoff, soak audit 2026-11-27). FFmpeg's line with the cause stays."""
    broker: MosquittoServer = mosquitto()  # type: ignore[operator]
    url = f"http://127.0.0.1:{free_port()}/cam.mjpg"  # nothing listens: refused at once
    config = detector_config(street_video, broker, model_path, camera={
        "source": url, "reconnectMinSeconds": 0.1, "reconnectMaxSeconds": 0.2, "timeoutSeconds": 2})
    detector = run_detector(config)
    deadline = time.monotonic() + 60
    while detector.output().count("Connection refused") < 5 and time.monotonic() < deadline:
        assert detector.process.poll() is None, detector.output()[-4000:]
        time.sleep(0.2)
    assert detector.terminate() == 0
    output = detector.output()
    assert output.count("Connection refused") >= 5, output[-4000:]  # FFmpeg's line: one an attempt
    assert f"camera url {url}" in output and "unavailable" in output, output[-4000:]
    opencv_warnings = [line for line in output.splitlines() if "[ WARN" in line]
    assert opencv_warnings == [], "\n".join(opencv_warnings[:6])
