"""Facts of a facecap release that the build, the packaging and the demo share.

Standard library only and free of package-relative imports: components/build.py, which the GDK runs under
whatever Python it has, loads this file by its path.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import urllib.request
from pathlib import Path

# The YuNet face model the FaceDetector component ships beside the wheel.
MODEL_FILE = "face_detection_yunet_2023mar.onnx"
# The file is a plain git blob at a fixed commit, so the URL and the digest never change.
MODEL_URL = (
    "https://raw.githubusercontent.com/ShiqiYu/libfacedetection.train/"
    "2b5e61dee21441ef4676505f835ab63ee53bae1e/onnx/yunet_s_640_640.onnx"
)
MODEL_SHA256 = "8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4"
MODEL_URL_ENV = "FACECAP_MODEL_URL"  # a mirror of the same file; the digest is checked all the same


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download_verified(url: str, target: Path, sha256: str = MODEL_SHA256, timeout: float = 60) -> None:
    """Download `url` to `target` only if its digest is `sha256`: written beside it first and renamed, so
    an interrupted or wrong download never leaves a file at `target`. Raises OSError or ValueError."""
    if not url.startswith(("https://", "http://")):
        raise ValueError(f"the model URL must be http(s): {url!r}")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}.part")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, partial.open("wb") as out:  # noqa: S310
            shutil.copyfileobj(response, out)
        digest = sha256_of(partial)
        if digest != sha256:
            raise ValueError(f"the file from {url} has sha256 {digest}, expected {sha256}")
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)


def project_version(root: Path) -> str:
    """[project] version from root/pyproject.toml (no tomllib: the build must run on Python 3.10)."""
    text = (root / "pyproject.toml").read_text(encoding="utf-8")
    project = re.search(r"^\[project\]\s*$(.*?)(?=^\[|\Z)", text, flags=re.MULTILINE | re.DOTALL)
    version = re.search(r'^version\s*=\s*"([^"]+)"', project.group(1) if project else "", flags=re.MULTILINE)
    if not version:
        raise ValueError(f"{root / 'pyproject.toml'} has no [project] version")
    return version.group(1)
