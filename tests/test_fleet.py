"""`facecap fleet`'s view of the retained health topics (the broker round trip is in tests/security)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import pytest

from facecap.contract import format_time
from facecap.devkit.servers import free_port
from facecap.mqtt import ReceivedMessage
from facecap.processor.fleet import FleetView, render_table

from .conftest import REPO

pytestmark = pytest.mark.unit
NOW = datetime(2026, 11, 26, 12, 0, tzinfo=timezone.utc)


def message(topic: str, payload: bytes) -> ReceivedMessage:
    return ReceivedMessage(topic, payload, None, (), 0, True)


def stats(age: float, **figures: object) -> bytes:
    return json.dumps({"at": format_time(NOW - timedelta(seconds=age)), **figures}).encode()


def test_devices_components_bridge_and_staleness() -> None:
    view = FleetView()
    for topic, payload in [
        ("facecap/jetson-1/detector/status", b"online"),
        ("facecap/jetson-1/detector/stats", stats(30, fps=9.8, faces=4, published=4, dropped=1, pending=0)),
        ("facecap/jetson-1/logger/stats", stats(50, faces=4, rejected=0)),
        ("$SYS/broker/connection/facecap-edge-jetson-1/state", b"1"),
        ("$SYS/broker/connection/facecap-edge-jetson-2/state", b"0"),
        ("facecap/jetson-2/detector/status", b"offline"),
        ("facecap/jetson-2/detector/stats", b"not json"),  # ignored, not fatal
        ("facecap/jetson-2/logger/stats", b"[" * 100_000),  # a hostile device's, nested past the stack
        ("facecap/facecap-processor/processor/status", b"online"),  # the processor is no device
        ("facecap/jetson-1/receipts", b"{}"),  # not health
    ]:
        view.handle(message(topic, payload))
    one, two = view.snapshot()
    assert [one.device, two.device] == ["jetson-1", "jetson-2"]
    assert one.last_seen == NOW - timedelta(seconds=30)  # the newest stats of any component
    assert one.bridge == "connected" and two.bridge == "disconnected"
    assert not one.is_stale(NOW, 60) and one.is_stale(NOW, 20)
    assert two.last_seen is None and two.is_stale(NOW, 10**9)  # never sent stats
    table = render_table(view.snapshot(), NOW, 60)
    assert "jetson-1  ok  last seen 30 s ago  bridge connected" in table
    assert "detector   online   fps=9.8 faces=4 published=4 dropped=1 pending=0" in table
    assert "jetson-2  STALE  last seen never  bridge disconnected" in table
    assert one.as_dict(NOW, 60)["stats"]["logger"]["rejected"] == 0


def test_a_dead_component_is_a_fault_even_while_another_keeps_the_device_fresh() -> None:
    """The logger's stats kept a device with a dead, crash-looping or BROKEN detector 'ok' (exit 0), with the
    dead detector's last figures shown as if current."""
    view = FleetView()
    for topic, payload in [
        ("facecap/killed/detector/status", b"offline"),  # its last will
        ("facecap/killed/detector/stats", stats(20, fps=5.0, evicted=14, camera_outages=2)),
        ("facecap/killed/logger/status", b"online"),
        ("facecap/killed/logger/stats", stats(10, faces=3)),
        ("facecap/looping/detector/status", b"online"),  # restarted again and again, never reporting stats
        ("facecap/looping/detector/stats", stats(400, fps=5.0)),
        ("facecap/looping/logger/stats", stats(10, faces=3)),
        ("$SYS/broker/connection/facecap-edge-cut/state", b"0"),  # powered off: its wills never left it
        ("facecap/cut/detector/status", b"online"),
        ("facecap/cut/detector/stats", stats(30)),
    ]:
        view.handle(message(topic, payload))
    cut, killed, looping = view.snapshot()
    assert killed.faults(NOW, 60) == ["detector offline"] and not killed.healthy(NOW, 60)
    assert looping.faults(NOW, 60) == ["detector silent for 400 s"]
    assert cut.faults(NOW, 60) == [] and cut.healthy(NOW, 60)
    table = render_table(view.snapshot(), NOW, 60)
    assert "killed  FAULT (detector offline)  last seen 10 s ago" in table
    assert "looping  FAULT (detector silent for 400 s)" in table
    assert "\n  detector   online?\n" in table  # as last known while the bridge is down
    assert "evicted=14 camera_outages=2" in table  # faces lost to a full outbox are in the table
    assert killed.as_dict(NOW, 60)["faults"] == ["detector offline"]


def test_a_component_that_reports_less_often_than_stale_after_is_not_a_fault() -> None:
    view = FleetView()
    for topic, payload in [
        ("facecap/quiet/detector/stats", stats(20, intervalSeconds=60)),
        ("facecap/quiet/logger/stats", stats(400, intervalSeconds=600)),  # a long summaryIntervalSeconds
        ("facecap/dead/detector/stats", stats(20, intervalSeconds=60)),
        ("facecap/dead/logger/stats", stats(1300, intervalSeconds=600)),  # two of its rounds missed
    ]:
        view.handle(message(topic, payload))
    dead, quiet = view.snapshot()
    assert quiet.faults(NOW, 300) == [] and dead.faults(NOW, 300) == ["logger silent for 1300 s"]


def test_a_device_whose_clock_runs_far_ahead_does_not_look_fresh_for_ever() -> None:
    # Its stats are stamped a day ahead: before, it showed "ok, last seen -86400 s ago" for a whole day
    # after it died, and `facecap fleet`'s exit code stayed 0.
    view = FleetView()
    view.handle(message("facecap/jetson-ahead/detector/stats", stats(-86_400, fps=1.0)))
    view.handle(message("facecap/jetson-skewed/detector/stats", stats(-20, fps=1.0)))  # a little ahead: fine
    ahead, skewed = view.snapshot()
    assert ahead.is_stale(NOW, 300) and not skewed.is_stale(NOW, 300)
    table = render_table(view.snapshot(), NOW, 300)
    assert "jetson-ahead  STALE  last seen 86400 s in the future (the device's clock is ahead)" in table


def test_a_devices_own_words_cannot_drive_the_operators_terminal() -> None:
    """A device writes its status and stats itself: an escape sequence there (clear the screen, hide what
    follows) must not reach the table the operator reads."""
    view = FleetView()
    view.handle(message("facecap/jetson-1/detector/status", b"online\x1b[2J\x1b[H\x1b[8m"))
    view.handle(message("facecap/jetson-1/detector/stats", stats(5, faces="\x1b]0;all ok\x07" + "9" * 100)))
    table = render_table(view.snapshot(), NOW, 60)
    assert "\x1b" not in table and "\x07" not in table
    assert "detector   online?[2J?[H?[8m faces=" in table
    assert "faces=?]0;all ok?" + "9" * 28 + "…" in table  # clipped to 40 characters


def test_an_unreachable_broker_is_reported_on_stderr_and_leaves_stdout_to_the_table() -> None:
    """`facecap fleet --json | jq` must not get an error text to parse: it goes to stderr, with exit 2."""
    config = json.dumps({"mqtt": {"port": free_port(), "connectTimeoutSeconds": 1}})
    result = subprocess.run([sys.executable, "-m", "facecap.cli", "fleet", "--json", "--config", config],
                            capture_output=True, text=True, timeout=60, check=False,
                            env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    assert result.returncode == 2
    assert result.stdout == ""
    assert "facecap fleet: cannot read the cloud broker at mqtt://127.0.0.1:" in result.stderr
