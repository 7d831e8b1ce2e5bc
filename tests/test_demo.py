"""`facecap demo`, the README's first command, as a user runs it: twice into the same output folder, and once
with every other documented option."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from facecap.devkit.demo.video import DEFAULT_VISITS, render_video

pytestmark = pytest.mark.e2e


def run_demo(out: Path, model_path: Path, *args: str) -> dict[str, str]:
    argv = [sys.executable, "-m", "facecap.cli", "demo", "--out", str(out), "--model", str(model_path), *args]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = result.stdout.split("demo: summary", 1)[1]
    return {**dict(re.findall(r"^  (\S.*?)\s{2,}(\S.*)$", summary, flags=re.MULTILINE)), "output": result.stdout}


def test_demo_stores_every_published_face_and_a_second_run_reports_only_its_own(
        tmp_path: Path, model_path: Path) -> None:
    out = tmp_path / "demo-output"
    visits = len(DEFAULT_VISITS)
    # The second run also shows --cameras: three different sample videos through one detector.
    for run, args, cameras in ((1, (), 1), (2, ("--first-shot", "--cameras", "3"), 3)):
        summary = run_demo(out, model_path, *args)
        published = int(summary["messages published"])
        shots = 2 if "--first-shot" in args else 1
        # Best-shot mode: one face per visit of each sample video (two with --first-shot: the first and
        # the best), each stored once, in every run, however many faces earlier runs left in the same store.
        assert published == visits * shots * cameras, (run, summary)
        assert int(summary["objects stored"]) == published, (run, summary)
        assert summary["stored per camera"] == ", ".join(f"cam{n} {visits * shots}" for n in range(cameras))
        page = Path(summary["gallery"]).read_text()
        assert page.count("<figure>") == published, run
        assert page.count("<section>") == visits * cameras, run  # grouped by track
        assert [page.count(f"<h2>camera cam{n}: ") for n in range(cameras)] == [1] * cameras, run
        assert len(list((out / "gallery" / "images").iterdir())) == published, run
    assert page.count(">first shot<") == page.count(">best shot<") == 3 * visits
    assert int(summary["first shots"]) == 3 * visits and summary["first-shot capture-to-store p50"].endswith(" ms")
    assert len(list((out / "store").rglob("*.jpg"))) == visits + 2 * 3 * visits


def test_every_other_documented_option_in_one_run(tmp_path: Path, model_path: Path) -> None:
    """--store s3, --mode every and --source FILE (README), together so the suite pays for one run."""
    video = tmp_path / "visits.avi"
    render_video(video)
    out = tmp_path / "demo-output"
    started = time.monotonic()
    summary = run_demo(out, model_path, "--store", "s3", "--mode", "every", "--source", str(video))
    took = time.monotonic() - started
    published = int(summary["messages published"])
    # Every mode sends many shots of each visit, not one; the S3 store has every one of them (the progress
    # counts them from the object keys, so the run did not wait out its 60 s bound for them).
    assert published > 2 * len(DEFAULT_VISITS), summary
    assert int(summary["objects stored"]) == published, summary
    assert ", store s3://" in summary["output"] and f"detector reading {video}" in summary["output"]
    # The progress line counts the S3 objects too (it read them without metadata, and counted none).
    assert max(int(n) for n in re.findall(r"^demo: frames .* stored (\d+)$", summary["output"], re.MULTILINE)) > 0
    print(f"demo --store s3 --mode every --source FILE: {published} faces in {took:.1f} s")
