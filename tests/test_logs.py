"""The logging setup: facecap's own DEBUG lines, but never a library's (botocore's would print credentials)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import boto3
import pytest
from botocore.config import Config

from facecap.devkit.servers import free_port
from facecap.logs import KeyedThrottle, setup_logging

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    root, ours = logging.getLogger(), logging.getLogger("facecap")
    saved = (root.handlers[:], root.level, ours.level)
    yield
    root.handlers[:], root.level = saved[0], saved[1]
    ours.setLevel(saved[2])


def test_debug_applies_to_facecap_not_to_libraries(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("DEBUG")
    logging.getLogger("facecap.processor.run").debug("stored one face")
    logging.getLogger("botocore.endpoint").debug("a library's debug line")
    logging.getLogger("botocore.credentials").info("a library's info line")
    out = capsys.readouterr().out
    assert "stored one face" in out
    assert "a library's debug line" not in out
    assert "a library's info line" in out


def test_warning_level_hides_facecap_info(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("WARNING")
    logging.getLogger("facecap.logger").info("per-minute summary")
    logging.getLogger("facecap.logger").warning("bad message")
    out = capsys.readouterr().out
    assert "per-minute summary" not in out and "bad message" in out


def test_debug_log_of_a_real_s3_request_holds_no_credentials(capsys: pytest.CaptureFixture[str],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAFACECAPTESTKEY01")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "facecap-test-secret")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "facecap-test-session-token")
    setup_logging("DEBUG")
    # Nothing listens on this port: the request is signed and sent (and logged, were botocore at DEBUG),
    # then fails at once without retries.
    client = boto3.client("s3", region_name="us-east-1", endpoint_url=f"http://127.0.0.1:{free_port()}",
                          config=Config(retries={"max_attempts": 1}, connect_timeout=2))
    with pytest.raises(Exception, match="Could not connect"):
        client.put_object(Bucket="faces", Key="k", Body=b"x")
    out = capsys.readouterr().out
    assert "Found credentials in environment variables" in out  # the library's INFO still shows
    assert "AKIAFACECAPTESTKEY01" not in out
    assert "facecap-test-session-token" not in out


def test_json_format_is_one_object_a_line(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("INFO", "json")
    logging.getLogger("facecap.demo").info("hello %s", "world")
    entry = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert entry["message"] == "hello world" and entry["level"] == "INFO" and entry["logger"] == "facecap.demo"


def test_a_keyed_throttle_speaks_once_per_key_and_interval_and_stays_bounded() -> None:
    now = [0.0]
    throttle: KeyedThrottle[str] = KeyedThrottle(10.0, most=2, clock=lambda: now[0])
    assert [throttle.due("a"), throttle.due("a"), throttle.due("a"), throttle.due("b")] == [0, None, None, 0]
    now[0] = 10.0
    assert throttle.due("a") == 2  # held back twice since its last line
    assert throttle.due("c") == 0  # a third key: the table starts over instead of growing
    assert throttle.due("a") == 0
