"""The device's Python: JetPack 6 (Ubuntu 22.04) has Python 3.10, and the components run on it there, while
this machine and the processor's image have 3.11. Every module must at least compile on 3.10, and the
pure contract code the FaceLogger runs must accept what the detector writes (it refused every face on 3.10
once: `datetime.fromisoformat` reads a trailing Z only from 3.11)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from .conftest import REPO

pytestmark = pytest.mark.unit

ROUND_TRIP = """
import sys
from datetime import datetime, timezone
sys.path.insert(0, sys.argv[1])
from facecap.contract import FaceMetadata, build_message, parse_message
face = build_message(b"\\xff\\xd8\\xff\\xe0" + bytes(100),
                     FaceMetadata("jetson-1", "cam0", datetime.now(timezone.utc), (1, 2, 40, 40), 0.9))
parsed = parse_message(face.topic, face.payload, face.content_type, face.user_properties)
print(sys.version_info[:2], parsed.captured_at.tzinfo)
"""


def python310() -> str:
    """A Python 3.10 (pyenv's, as on the development machines), or a skip: nothing installs one here, since
    Debian 12 has no 3.10 package."""
    candidates = [*sorted(Path.home().glob(".pyenv/versions/3.10*/bin/python3.10")),
                  *filter(None, [shutil.which("python3.10")])]
    for candidate in candidates:
        probe = subprocess.run([str(candidate), "-c", "import sys; print(sys.version_info[:2])"],
                               capture_output=True, text=True, check=False)
        if probe.returncode == 0 and probe.stdout.strip() == "(3, 10)":
            return str(candidate)
    pytest.skip("no Python 3.10 on this machine (JetPack 6's; e.g. pyenv install 3.10)")


def test_every_module_compiles_on_python_310(tmp_path: Path) -> None:
    result = subprocess.run([python310(), "-m", "compileall", "-q", "-d", "src", str(REPO / "src")],
                            capture_output=True, text=True, check=False, env={"PYTHONPYCACHEPREFIX": str(tmp_path)})
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_face_round_trips_through_the_contract_on_python_310() -> None:
    result = subprocess.run([python310(), "-c", ROUND_TRIP, str(REPO / "src")], capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "(3, 10) UTC"
