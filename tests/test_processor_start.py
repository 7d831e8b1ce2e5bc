"""`facecap processor` refuses to start, saying why, when its S3 store cannot work at all."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def test_processor_without_an_aws_region_refuses_to_start_and_says_why(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "FACECAP_"))}
    config = json.dumps({"store": "s3://faces-bucket/x", "heartbeatFile": str(tmp_path / "hb")})
    result = subprocess.run([sys.executable, "-m", "facecap.cli", "processor", "--config", config], env=env,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 1
    assert "cannot start: no AWS region for S3: set AWS_REGION" in result.stdout + result.stderr
