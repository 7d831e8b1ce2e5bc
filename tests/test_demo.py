"""`facecap demo`, the README's first command, as a user runs it: twice into the same output folder."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from facecap.devkit.demo.video import DEFAULT_VISITS

pytestmark = pytest.mark.e2e


def run_demo(out: Path, model_path: Path, *args: str) -> dict[str, str]:
    argv = [sys.executable, "-m", "facecap.cli", "demo", "--out", str(out), "--model", str(model_path), *args]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = result.stdout.split("demo: summary", 1)[1]
    return dict(re.findall(r"^  (\S.*?)\s{2,}(\S.*)$", summary, flags=re.MULTILINE))


def test_demo_stores_every_published_face_and_a_second_run_reports_only_its_own(
        tmp_path: Path, model_path: Path) -> None:
    out = tmp_path / "demo-output"
    visits = len(DEFAULT_VISITS)
    for run, args in ((1, ()), (2, ("--first-shot",))):
        summary = run_demo(out, model_path, *args)
        published = int(summary["messages published"])
        # Best-shot mode: one face per visit of the sample video (two with --first-shot: the first and the
        # best), each stored once, in every run, however many faces earlier runs left in the same store.
        assert published == visits * len(("best", *args)), (run, summary)
        assert int(summary["objects stored"]) == published, (run, summary)
        page = Path(summary["gallery"]).read_text()
        assert page.count("<figure>") == published, run
        assert page.count("<section>") == visits, run  # grouped by track
        assert len(list((out / "gallery" / "images").iterdir())) == published, run
    assert page.count(">first shot<") == page.count(">best shot<") == visits
    assert int(summary["first shots"]) == visits and summary["first-shot capture-to-store p50"].endswith(" ms")
    assert len(list((out / "store").rglob("*.jpg"))) == 3 * visits
