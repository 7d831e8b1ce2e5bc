"""`facecap detect` in a newcomer's clone: no FACECAP_SHARED, no model anywhere. It fetches the model once
from its URL into the cache, checking the sha256, and uses it from then on; offline, or from a server that
sends the wrong file, it says so in one line and falls back to Haar."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from facecap.devkit.servers import free_port
from facecap.release import MODEL_FILE, MODEL_SHA256, sha256_of

from .support.helpers import model_mirror

pytestmark = pytest.mark.integration

FACECAP = str(Path(sys.executable).parent / "facecap")


@pytest.fixture
def mirror(model_path: Path, tmp_path: Path) -> Iterator[str]:
    with model_mirror(model_path, tmp_path / "served") as base:
        yield base


def detect(image: Path, cache: Path, url: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACECAP_")}
    env.update({"XDG_CACHE_HOME": str(cache), "FACECAP_MODEL_URL": url})
    return subprocess.run([FACECAP, "detect", "--json", str(image)], capture_output=True, text=True, env=env,
                          timeout=120, check=False)


@pytest.fixture
def image(shared_dir: Path) -> Path:
    return next((shared_dir / "faces" / "dev" / "images").glob("*.jpg"))


def test_detect_downloads_the_model_once_into_the_cache(mirror: str, image: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first = detect(image, cache, f"{mirror}/yunet.onnx")
    assert first.returncode == 0, first.stderr
    cached = cache / "facecap" / MODEL_FILE
    assert f"downloading it once from {mirror}/yunet.onnx into {cached}" in first.stderr
    assert sha256_of(cached) == MODEL_SHA256
    assert json.loads(first.stdout)["faces"], first.stdout  # YuNet found the face
    # From the cache now, even with the mirror gone: no second download.
    second = detect(image, cache, f"http://127.0.0.1:{free_port()}/gone.onnx")
    assert second.returncode == 0 and second.stderr == "", second.stderr
    assert json.loads(second.stdout) == json.loads(first.stdout)


def test_detect_falls_back_to_haar_offline_or_on_a_wrong_file(mirror: str, image: Path, tmp_path: Path) -> None:
    offline = detect(image, tmp_path / "a", f"http://127.0.0.1:{free_port()}/yunet.onnx")
    wrong = detect(image, tmp_path / "b", f"{mirror}/other.onnx")
    for result, reason in ((offline, "Connection refused"), (wrong, MODEL_SHA256)):
        assert result.returncode == 0, result.stderr
        last = result.stderr.strip().splitlines()[-1]
        assert "cannot download the YuNet model" in last and reason in last and "using Haar" in last
        assert "Traceback" not in result.stderr
        assert json.loads(result.stdout)["faces"]  # Haar finds the face too
    assert not (tmp_path / "b" / "facecap" / MODEL_FILE).exists()
    assert not list((tmp_path / "b" / "facecap").iterdir())  # no partial file left behind
