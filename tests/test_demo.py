"""`facecap demo`, the README's first command, as a user runs it: twice into the same output folder, and once
with every other documented option."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from facecap.devkit.demo.video import DEFAULT_VISITS, Visit, render_video

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


def left_running(out: Path) -> list[str]:
    """Processes still running whose command line names the demo's folder (its parts, their brokers)."""
    found = []
    for process in psutil.process_iter(["pid", "cmdline"]):
        with contextlib.suppress(psutil.Error):
            line = " ".join(process.info["cmdline"] or [])
            if str(out) in line and process.pid != os.getpid():
                found.append(f"{process.pid}: {line[:200]}")
    return found


def interrupted_demo(out: Path, model_path: Path, video: Path, stop: Callable[[subprocess.Popen[str]], None]
                     ) -> tuple[int, str]:
    argv = [sys.executable, "-m", "facecap.cli", "demo", "--out", str(out), "--model", str(model_path),
            "--source", str(video)]
    # A session of its own, as a terminal gives a command: Ctrl-C reaches its whole process group.
    demo = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    assert demo.stdout is not None
    lines = []
    for line in demo.stdout:
        lines.append(line)
        seen = re.match(r"demo: frames \d+ .* faces (\d+) ", line)
        if seen and int(seen.group(1)) >= 3:  # the person is in view, followed by an open track
            stop(demo)
            break
    lines.append(demo.stdout.read())
    return demo.wait(timeout=180), "".join(lines)


def test_ctrl_c_or_sigterm_stops_the_demo_cleanly_and_leaves_nothing_running(tmp_path: Path,
                                                                             model_path: Path) -> None:
    """Ctrl-C used to kill the cloud broker with the demo (it was in the terminal's process group), so the
    faces the detector sends as it stops were never stored (FAILED after 60 s); a SIGTERM (`timeout`) ended
    the demo without stopping its parts. A run of one person who stays in view, stopped each way."""
    video = tmp_path / "stays.avi"
    render_video(video, visits=(Visit(0.0, 60.0, 300, True, 100),))
    out = tmp_path / ("a-long-folder-name-" * 4)  # too long for a socket path: the broker's run folder is in /tmp
    for name, stop in (("Ctrl-C", lambda demo: os.killpg(demo.pid, signal.SIGINT)),
                       ("SIGTERM", lambda demo: demo.send_signal(signal.SIGTERM))):
        code, output = interrupted_demo(out, model_path, video, stop)
        assert code == 0 and "FAILED" not in output, f"{name}:\n{output[-3000:]}"
        summary = dict(re.findall(r"^  (\S.*?)\s{2,}(\S.*)$", output.split("demo: summary", 1)[1], re.MULTILINE))
        assert int(summary["messages published"]) >= 1, f"{name}:\n{output[-3000:]}"
        assert summary["objects stored"] == summary["messages published"], name
        # The cloud broker outlived the detector: the bridge was still up when the detector's last face went.
        last_stats = [line for line in (out / "logs" / "detector.log").read_text().splitlines() if "stats:" in line]
        assert "bridge=up" in last_stats[-1], f"{name}: {last_stats[-1]}"
        assert not left_running(out), name
        run_dir = re.search(r"edge broker on (\S+)/mosquitto\.sock", output)
        assert run_dir is not None and run_dir.group(1).startswith(tempfile.gettempdir()), output
        assert not Path(run_dir.group(1)).exists(), f"{name}: the temporary run folder is left behind"
