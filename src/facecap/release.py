"""Facts of a facecap release that the build, the packaging and the demo share.

Standard library only and free of package-relative imports: components/build.py, which the GDK runs under
whatever Python it has, loads this file by its path.
"""

from __future__ import annotations

import re
from pathlib import Path

# The YuNet face model the FaceDetector component ships beside the wheel.
MODEL_FILE = "face_detection_yunet_2023mar.onnx"


def project_version(root: Path) -> str:
    """[project] version from root/pyproject.toml (no tomllib: the build must run on Python 3.10)."""
    text = (root / "pyproject.toml").read_text(encoding="utf-8")
    project = re.search(r"^\[project\]\s*$(.*?)(?=^\[|\Z)", text, flags=re.MULTILINE | re.DOTALL)
    version = re.search(r'^version\s*=\s*"([^"]+)"', project.group(1) if project else "", flags=re.MULTILINE)
    if not version:
        raise ValueError(f"{root / 'pyproject.toml'} has no [project] version")
    return version.group(1)
