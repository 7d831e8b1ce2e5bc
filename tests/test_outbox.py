"""The outbox on its own: durability (a real process SIGKILLed right after capture), the bounds and the
full policies, the redelivery schedule, a damaged file at start, and the read-only status and list
commands while the owner holds the file open."""

from __future__ import annotations

import json
import logging
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from facecap.cli import main as cli_main
from facecap.contract import OutgoingFace
from facecap.detector.durable import open_outbox
from facecap.mqtt import MqttClient, MqttSettings
from facecap.outbox import Outbox, OutboxSettings, OutboxWriteError, schema
from facecap.outbox.inspect import OutboxReadError, read_pending, read_status
from facecap.outbox.recover import move_aside
from facecap.outbox.schema import FILE_NAME, OutboxBusyError, claim

from .conftest import REPO, unavailable
from .support.filesystems import SmallFilesystem
from .support.helpers import sample_face
from .support.users import NOBODY, as_nobody, folder_for_two_users


def faces(count: int, size: int = 2000) -> list:  # type: ignore[type-arg]
    return [sample_face(device="jetson-1", size=size, frame=i) for i in range(count)]


def pending_ids(folder: Path) -> list[str]:
    return [entry.face_id for entry in read_pending(folder)]


def outbox_file_of(folder: Path, batch: list[OutgoingFace]) -> Path:
    """An outbox in `folder` holding `batch`, closed with everything in its main file (no WAL): the file to
    damage."""
    outbox = Outbox(folder)
    outbox.capture(batch)
    outbox._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    outbox.close()
    return folder / FILE_NAME


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    return subprocess.run([sys.executable, "-m", "facecap.cli", *args], capture_output=True, text=True,
                          env=env, timeout=60, check=False)


def test_a_face_is_on_disk_when_capture_returns_even_if_the_producer_is_killed_at_once(tmp_path: Path) -> None:
    """The producer commits one face and is SIGKILLed by itself right after capture() returns, before it
    could publish or close anything; another process then finds the face."""
    script = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {str(REPO)!r})
        from facecap.outbox import Outbox
        from tests.support.helpers import sample_face
        outbox = Outbox(__import__("pathlib").Path({str(tmp_path)!r}))
        assert outbox._conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert outbox._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        face = sample_face(device="jetson-1")
        assert outbox.capture([face]) == [True]
        os.write(1, face.face_id.encode())
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, env=env, timeout=60, check=False)
    assert result.returncode == -9, result.stderr.decode()
    face_id = result.stdout.decode()
    assert len(face_id) == 26
    assert pending_ids(tmp_path) == [face_id]  # read-only, by this (another) process
    reopened = Outbox(tmp_path)
    assert reopened.counts().pending == 1
    due = reopened.take_due(10, now=time.time() + 3600)
    assert [f.face_id for f in due] == [face_id]
    assert due[0].payload and dict(due[0].user_properties)["face-id"] == face_id
    reopened.close()


def test_receipts_delete_faces_and_the_totals_survive_a_restart(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path)
    batch = faces(5)
    assert outbox.capture(batch) == [True] * 5
    assert outbox.capture(batch[:1]) == [True]  # the same face again is not a second one
    assert outbox.delivered([batch[0].face_id, batch[1].face_id, "0" * 26]) == 2
    assert outbox.delivered([batch[0].face_id]) == 0  # a duplicate receipt deletes nothing
    counts = outbox.counts()
    assert (counts.pending, counts.delivered) == (3, 2)
    outbox.close()
    again = Outbox(tmp_path)
    assert again.counts() == counts
    assert pending_ids(tmp_path) == [f.face_id for f in batch[2:]]
    again.close()


def test_drop_oldest_evicts_counts_and_logs_once_per_episode(tmp_path: Path,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="facecap.outbox")
    outbox = Outbox(tmp_path, OutboxSettings(max_faces=5, when_full="drop-oldest"))
    batch = faces(8)
    for face in batch:
        assert outbox.capture([face]) == [True]
    assert pending_ids(tmp_path) == [f.face_id for f in batch[3:]]  # the newest five
    assert outbox.counts().evicted == 3
    assert sum("is full" in r.message for r in caplog.records) == 1
    outbox.delivered([f.face_id for f in batch[3:6]])
    assert sum("has room again" in r.message for r in caplog.records) == 1
    assert "3 faces evicted" in caplog.text
    assert read_status(tmp_path).evicted == 3
    outbox.close()


def test_refuse_newest_keeps_what_is_there_and_counts_the_refused(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path, OutboxSettings(max_faces=5, when_full="refuse-newest"))
    batch = faces(8)
    assert outbox.capture(batch) == [True] * 5 + [False] * 3
    assert pending_ids(tmp_path) == [f.face_id for f in batch[:5]]
    counts = outbox.counts()
    assert (counts.pending, counts.refused, counts.evicted) == (5, 3, 0)
    outbox.close()


def test_the_byte_bound_holds(tmp_path: Path) -> None:
    limit = 1024 * 1024
    outbox = Outbox(tmp_path, OutboxSettings(max_bytes=limit))
    batch = faces(12, size=100_000)
    assert all(outbox.capture(batch))
    counts = outbox.counts()
    assert counts.pending_bytes <= limit
    assert counts.pending == 10 and counts.evicted == 2
    assert pending_ids(tmp_path) == [f.face_id for f in batch[2:]]
    outbox.close()


def test_a_face_bigger_than_the_whole_outbox_is_refused_and_evicts_nothing(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path, OutboxSettings(max_bytes=1024 * 1024))
    small, big = faces(1)[0], sample_face(device="jetson-1", size=1024 * 1024, frame=1)
    assert outbox.capture([small, big]) == [True, False]
    counts = outbox.counts()
    assert (counts.pending, counts.evicted, counts.refused) == (1, 0, 1)
    assert pending_ids(tmp_path) == [small.face_id]
    outbox.close()


def test_a_batch_the_disk_refused_halfway_leaves_the_totals_as_they_were(tmp_path: Path) -> None:
    """Rolled back: the first face of the batch went in, the second did not fit on the disk. Totals that kept
    the first would make the outbox evict or refuse real faces early."""
    outbox = Outbox(tmp_path)
    pages, page_size = (outbox._conn.execute(f"PRAGMA {name}").fetchone()[0] for name in ("page_count", "page_size"))
    outbox._conn.execute(f"PRAGMA max_page_count = {pages + 80_000 // page_size}")  # room for one 50 KB face
    with pytest.raises(OutboxWriteError):
        outbox.capture(faces(2, size=50_000))
    assert outbox.counts().pending == 0 and outbox.counts().pending_bytes == 0
    assert pending_ids(tmp_path) == []
    outbox.close()


def test_redelivery_backs_off_and_resume_makes_everything_due(tmp_path: Path) -> None:
    settings = OutboxSettings(redeliver_after_seconds=10, redeliver_backoff=2, redeliver_max_seconds=25)
    outbox = Outbox(tmp_path, settings)
    face = faces(1)[0]
    start = time.time()
    outbox.capture([face])
    assert outbox.take_due(10, now=start + 5) == []
    first = outbox.take_due(10, now=start + 11)
    assert [(f.face_id, f.attempts) for f in first] == [(face.face_id, 2)]
    assert outbox.take_due(10, now=start + 11 + 19) == []  # now 20 s
    assert [f.attempts for f in outbox.take_due(10, now=start + 11 + 21)] == [3]
    assert outbox.take_due(10, now=start + 32 + 24) == []  # capped at 25 s
    assert [f.attempts for f in outbox.take_due(10, now=start + 32 + 26)] == [4]
    assert outbox.resume() == 1
    assert [f.attempts for f in outbox.take_due(10, now=start)] == [5]
    outbox.close()


def test_a_receipt_the_disk_refused_does_not_count_as_delivered(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path)
    batch = faces(3)
    outbox.capture(batch)
    # The write of the receipt fails as on a full disk, after the delete (a commit that cannot grow the WAL).
    outbox._conn.execute("CREATE TEMP TRIGGER full BEFORE INSERT ON counters BEGIN SELECT RAISE(ABORT, "
                         "'database or disk is full'); END")
    with pytest.raises(sqlite3.Error):
        outbox.delivered([batch[0].face_id])
    counts = outbox.counts()
    assert (counts.pending, counts.delivered) == (3, 0)
    outbox._conn.execute("DROP TRIGGER full")
    assert outbox.delivered([batch[0].face_id]) == 1 and outbox.counts().delivered == 1
    outbox.close()


def test_while_overdue_faces_are_held_only_those_due_at_once_or_presumed_lost_go(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path, OutboxSettings(redeliver_after_seconds=10))
    overdue, queued, lost = faces(3)
    start = time.time()
    outbox.capture([overdue, queued, lost])
    outbox.due_now([queued.face_id])  # committed but never handed to the client
    held = outbox.take_due(10, now=start + 11, overdue=False)
    assert [f.face_id for f in held] == [queued.face_id]
    assert outbox.take_due(10, now=start + 11, overdue=False) == []
    # The hold lives in the publisher's memory: held faces keep their schedule on disk (no rewrite of the
    # backlog).
    with sqlite3.connect(tmp_path / FILE_NAME) as conn:
        schedule = conn.execute("SELECT next_attempt FROM faces WHERE face_id = ?", (overdue.face_id,)).fetchone()
    assert start + 9 < schedule[0] < start + 11
    presumed = outbox.take_due(10, now=start + 11, overdue=False, lost=[lost.face_id])
    assert [f.face_id for f in presumed] == [lost.face_id]
    assert [f.face_id for f in outbox.take_due(10, now=start + 11)] == [overdue.face_id]
    outbox.close()


def test_a_garbage_outbox_file_is_moved_aside_and_a_fresh_one_starts(tmp_path: Path,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / FILE_NAME).write_bytes(b"this is not SQLite" * 500)
    result = run_cli("outbox", "status", str(tmp_path))
    assert result.returncode == 2
    assert str(tmp_path / FILE_NAME) in result.stderr and "moves a damaged outbox aside" in result.stderr
    outbox = Outbox(tmp_path)
    assert outbox.recovery is not None and outbox.recovery.recovered == 0
    assert outbox.recovery.damaged.read_bytes().startswith(b"this is not SQLite")
    assert str(tmp_path / FILE_NAME) in caplog.text and "moved it to" in caplog.text
    assert outbox.capture(faces(1)) == [True]
    outbox.close()
    assert Outbox(tmp_path).recovery is None  # the next start is a normal one


def test_a_truncated_outbox_keeps_the_faces_that_can_be_read(tmp_path: Path) -> None:
    batch = faces(300, size=3000)
    path = outbox_file_of(tmp_path, batch)
    size = path.stat().st_size
    with path.open("r+b") as file:
        file.truncate(size // 2)
    # In a real process, as a producer starting after the damage would: no exception, no crash loop.
    script = ("import sys, pathlib; from facecap.outbox import Outbox; o = Outbox(pathlib.Path(sys.argv[1])); "
              "print(o.recovery.recovered if o.recovery else 'none', o.counts().pending)")
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True,
                            env=env, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    recovered, pending = (int(v) for v in result.stdout.split())
    print(f"\ntruncated to {size // 2} of {size} bytes: recovered {recovered} of {len(batch)} faces")
    assert 0 < recovered < len(batch) and pending == recovered
    assert "was damaged" in result.stderr and str(path) in result.stderr
    survivors = set(pending_ids(tmp_path))
    assert survivors <= {f.face_id for f in batch}
    reopened = Outbox(tmp_path)
    assert reopened.recovery is None
    full = {f.face_id: f.payload for f in batch}
    assert all(full[f.face_id] == f.payload for f in reopened.take_due(1000, now=time.time() + 1e6))
    reopened.close()


def test_a_disk_that_refuses_writes_at_start_leaves_the_outbox_where_it_is(tmp_path: Path) -> None:
    """A full or failing disk is not a damaged file: the outbox stays in place with its faces, the start
    says why in one error, and the detector runs on without the outbox instead of restarting in a loop."""
    outbox = Outbox(tmp_path)
    batch = faces(5)
    outbox.capture(batch)
    outbox.close()
    script = textwrap.dedent("""
        import logging, pathlib, resource, signal, sys
        from facecap.detector.durable import open_outbox
        from facecap.mqtt import MqttClient, MqttSettings
        from facecap.outbox import Outbox, OutboxSettings, OutboxWriteError
        logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(message)s")
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))  # every write past 4 KB fails
        folder = pathlib.Path(sys.argv[1])
        try:
            Outbox(folder)
        except OutboxWriteError as exc:
            print("refused:", exc)
        settings = OutboxSettings(dir=str(folder))
        print("detector outbox:", open_outbox(settings, MqttClient(MqttSettings(), "t"), "jetson-1"))
    """)
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True,
                            env=env, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert f"refused: cannot open outbox {tmp_path / FILE_NAME}" in result.stdout
    assert "detector outbox: None" in result.stdout
    assert "publishing without the outbox until the next start" in result.stderr
    assert "Traceback" not in result.stderr
    assert not [path.name for path in tmp_path.iterdir() if ".damaged" in path.name]
    reopened = Outbox(tmp_path)  # the disk has room again
    assert reopened.recovery is None
    assert sorted(pending_ids(tmp_path)) == sorted(face.face_id for face in batch)
    reopened.close()


def test_a_read_only_disk_at_start_runs_without_the_outbox_and_the_outbox_can_still_be_read(
        small_filesystem: Callable[[int], SmallFilesystem], caplog: pytest.LogCaptureFixture) -> None:
    """ext4 remounts an eMMC read-only after I/O errors. The detector refused to start (outbox.dir called a
    configuration error), so Greengrass restarted it until it gave up and nothing was captured; and
    `facecap outbox status` called the sound file damaged."""
    disk = small_filesystem(8 * 1024 * 1024)
    folder = disk.path / "outbox"
    outbox = Outbox(folder, OutboxSettings(min_free_bytes=0))
    batch = faces(4)
    outbox.capture(batch)
    outbox.close()
    disk.read_only()
    client = MqttClient(MqttSettings(), "t")
    assert open_outbox(OutboxSettings(dir=str(folder)), client, "jetson-1") is None
    assert open_outbox(OutboxSettings(dir=str(disk.path / "never-made")), client, "jetson-1") is None
    assert "Read-only file system; publishing without the outbox until the next start" in caplog.text
    assert read_status(folder).pending == 4  # read as it is, nothing moved or written
    assert sorted(entry.face_id for entry in read_pending(folder)) == sorted(face.face_id for face in batch)
    disk.read_only(False)
    filler = disk.fill()  # a full disk: reading a closed WAL outbox needs room for its -shm
    with pytest.raises(OutboxReadError) as refused:
        read_status(folder)
    assert "the disk refuses" in str(refused.value) and "damaged" not in str(refused.value)
    filler.unlink()
    reopened = Outbox(folder)
    assert reopened.counts().pending == 4
    reopened.close()


def test_the_outbox_never_fills_its_own_disk_so_receipts_can_still_empty_it(
        small_filesystem: Callable[[int], SmallFilesystem]) -> None:
    """An outbox that filled its disk could not delete a face any more (SQLite's write-ahead log needs room
    for a delete too): every receipt failed, and it never emptied until something else freed space."""
    disk = small_filesystem(24 * 1024 * 1024)
    reserve = 6 * 1024 * 1024
    # The uplink is down: every face is overdue for its receipt a moment after it is captured.
    outbox = Outbox(disk.path / "outbox", OutboxSettings(min_free_bytes=reserve, redeliver_after_seconds=0.001))
    batch = faces(300, size=100_000)  # 30 MB: more than the disk holds
    for face in batch:
        assert outbox.capture([face]) == [True]
    counts = outbox.counts()
    assert counts.evicted > 0 and counts.pending + counts.evicted == 300
    # The reserve less at most the write-ahead log's growth before its next checkpoint (1000 pages, 4 MiB).
    free = shutil.disk_usage(disk.path).free
    assert free >= reserve - 4 * 1024 * 1024 - 512 * 1024, free
    # The receipts for everything still pending go through.
    assert outbox.delivered([face.face_id for face in batch]) == counts.pending
    assert outbox.counts().pending == 0
    outbox.close()
    # refuse-newest keeps what it has: a new face is refused by the disk, and goes out without the outbox.
    keeper = Outbox(disk.path / "keeper", OutboxSettings(min_free_bytes=reserve, when_full="refuse-newest",
                                                         redeliver_after_seconds=0.001))
    with pytest.raises(OutboxWriteError, match="minFreeBytes"):
        for face in faces(300, size=100_000):
            keeper.capture([face])
    assert keeper.counts().evicted == 0
    keeper.close()


def test_a_disk_held_at_the_floor_by_others_never_evicts_a_face_whose_receipt_is_on_the_way(
        small_filesystem: Callable[[int], SmallFilesystem], caplog: pytest.LogCaptureFixture) -> None:
    """Receipts flowing, the disk at minFreeBytes: evicting the oldest pending face took the one whose receipt
    came next, every time, so every face left the outbox just before its receipt (counted as evicted, with
    two warnings a face). Now such a face goes out without the outbox until receipts free pages."""
    disk = small_filesystem(32 * 1024 * 1024)
    reserve = 8 * 1024 * 1024
    outbox = Outbox(disk.path / "outbox", OutboxSettings(min_free_bytes=reserve))
    sent = faces(20, size=20_000)
    outbox.capture(sent)
    in_flight = [face.face_id for face in sent]
    with open(disk.path / "logs", "wb") as logs:  # something else fills the disk down to the floor
        logs.write(b"\0" * (shutil.disk_usage(disk.path).free - reserve - 4096))
    unsaved = 0
    for face in [sample_face(device="jetson-1", size=20_000, frame=1000 + i) for i in range(200)]:
        try:
            outbox.capture([face])
            in_flight.append(face.face_id)
        except OutboxWriteError:
            unsaved += 1
        if in_flight:
            outbox.delivered([in_flight.pop(0)])  # the receipt of a face sent a moment ago
    assert outbox.counts().evicted == 0
    assert unsaved < 100, unsaved  # receipts free pages, and later faces fit in them
    assert caplog.text.count("is full") <= 1
    outbox.close()


def test_a_damaged_crop_found_while_running_is_salvaged_and_the_rest_go_out(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The start reads the small rows only, so a bad page in a crop shows up at the first redelivery pass.
    The outbox then does what a start does with a damaged file, and the producer goes on."""
    batch = faces(20, size=20_000)
    path = outbox_file_of(tmp_path, batch)
    data = bytearray(path.read_bytes())
    page = 4096
    bad = (len(data) // page - 3) * page
    data[bad:bad + 8] = b"\xff" * 8  # the next-page pointer of an overflow page of one crop
    path.write_bytes(bytes(data))
    outbox = Outbox(tmp_path)
    assert outbox.recovery is None and outbox.counts().pending == 20  # the start cannot see it
    due = outbox.take_due(100, now=time.time() + 1e6)
    assert outbox.recovery is not None and outbox.recovery.damaged.exists()
    assert "was damaged" in caplog.text
    assert 0 < len(due) < 20 and outbox.counts().pending == len(due)
    originals = {face.face_id: face.payload for face in batch}
    assert all(originals[face.face_id] == face.payload for face in due)
    assert outbox.capture(faces(1, size=100)) == [True]
    outbox.close()


def test_every_older_outbox_schema_has_its_migration() -> None:
    # Without a step a release's upgrade could not open the outbox its devices already have.
    assert set(schema.MIGRATIONS) == set(range(1, schema.SCHEMA_VERSION))


def test_an_upgrade_migrates_the_outbox_in_place_and_a_rollback_leaves_it_alone(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A fleet runs old and new versions side by side and a device may go new -> old -> new. An outbox of
    another schema was set aside as damaged at every such start (a copy of every pending face each time, the
    counters lost); now an older file steps up in place and a newer one is left for its version."""
    outbox = Outbox(tmp_path)
    outbox.capture(faces(6))
    outbox.delivered([f.face_id for f in outbox.take_due(limit=2)])
    before = outbox.counts()
    outbox.close()
    # The next release adds a column.
    monkeypatch.setattr(schema, "SCHEMA_VERSION", 2)
    monkeypatch.setattr(schema, "MIGRATIONS", {1: "ALTER TABLE faces ADD COLUMN note TEXT"})
    upgraded = Outbox(tmp_path)
    assert upgraded.recovery is None and upgraded.counts() == before
    upgraded.close()
    # Rolled back: the old release cannot use the newer file and must not touch it.
    monkeypatch.setattr(schema, "SCHEMA_VERSION", 1)
    monkeypatch.setattr(schema, "MIGRATIONS", {})
    with pytest.raises(OutboxWriteError, match="written by a newer facecap"):
        Outbox(tmp_path)
    monkeypatch.setattr(schema, "SCHEMA_VERSION", 2)
    monkeypatch.setattr(schema, "MIGRATIONS", {1: "ALTER TABLE faces ADD COLUMN note TEXT"})
    again = Outbox(tmp_path)
    assert again.recovery is None and again.counts() == before
    with sqlite3.connect(tmp_path / FILE_NAME) as conn:
        assert "note" in {row[1] for row in conn.execute("PRAGMA table_info(faces)")}
    again.close()
    assert sorted(p.name for p in tmp_path.iterdir() if "damaged" in p.name) == []


def test_a_clock_set_back_does_not_hold_redelivery_back(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path, OutboxSettings(redeliver_after_seconds=60, redeliver_max_seconds=900))
    outbox.capture(faces(1))
    back = time.time() - 86_400  # the clock is set back a day after the face was scheduled
    assert outbox.take_due(10, now=back) == []
    assert [face.attempts for face in outbox.take_due(10, now=back + 901)] == [2]
    outbox.close()


def test_moving_a_damaged_file_aside_never_replaces_an_earlier_one(tmp_path: Path) -> None:
    path = tmp_path / FILE_NAME
    for offset in (0, 1):  # this second's name and the next one's are taken
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(time.time() + offset))
        path.with_name(f"{FILE_NAME}.damaged-{stamp}").write_bytes(b"earlier")
    path.write_bytes(b"now")
    moved = move_aside(path)
    assert moved.read_bytes() == b"now" and not path.exists()
    earlier = [p for p in tmp_path.iterdir() if p != moved]
    assert len(earlier) == 2 and all(p.read_bytes() == b"earlier" for p in earlier)


def test_status_and_list_read_while_the_owner_writes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    outbox = Outbox(tmp_path)
    batch = faces(4)
    outbox.capture(batch)
    outbox.delivered([batch[0].face_id])
    outbox.take_due(1, now=time.time() + 3600)  # one more attempt for batch[1]
    status = run_cli("outbox", "status", "--json", str(tmp_path))
    assert status.returncode == 0, status.stderr
    figures = json.loads(status.stdout)
    assert figures["pending"] == 3 and figures["delivered"] == 1 and figures["evicted"] == 0
    assert figures["pendingBytes"] == outbox.counts().pending_bytes
    assert figures["oldestCapturedAt"] == dict(batch[1].user_properties)["captured-at"]
    assert 0 <= figures["oldestAgeSeconds"] < 60
    listing = run_cli("outbox", "list", str(tmp_path))
    assert listing.returncode == 0, listing.stderr
    lines = [line.split() for line in listing.stdout.splitlines()]
    assert [(line[0], line[2]) for line in lines] == [(batch[1].face_id, "2"), (batch[2].face_id, "1"),
                                                      (batch[3].face_id, "1")]
    assert cli_main(["outbox", "status", str(tmp_path)]) == 0
    assert "pending    3 faces" in capsys.readouterr().out
    # The readers left the owner's file alone: it keeps writing.
    assert outbox.capture(faces(1)) == [True]
    outbox.close()
    assert cli_main(["outbox", "list", "--json", str(tmp_path)]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert rows[2]["faceId"] == batch[3].face_id and rows[0]["attempts"] == 2 and len(rows) == 4
    assert cli_main(["outbox", "list", str(tmp_path / "nowhere")]) == 2
    assert "no outbox here" in capsys.readouterr().err


def test_a_listing_cut_off_by_its_reader_ends_quietly(tmp_path: Path) -> None:
    """`facecap outbox list DIR | head -1`: the pipe closes under the writer, which must not print a
    traceback over the line the user asked for."""
    outbox = Outbox(tmp_path)
    outbox.capture(faces(3000, size=100))
    outbox.close()
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    lister = subprocess.Popen([sys.executable, "-m", "facecap.cli", "outbox", "list", str(tmp_path)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    assert lister.stdout is not None and lister.stderr is not None
    assert lister.stdout.readline()
    lister.stdout.close()  # as head does after its line
    assert lister.wait(60) == 141
    assert lister.stderr.read() == b""


def test_the_reader_never_writes(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path)
    outbox.capture(faces(1))
    outbox.close()
    conn = sqlite3.connect(f"{(tmp_path / FILE_NAME).as_uri()}?mode=ro", uri=True)
    with pytest.raises(sqlite3.OperationalError):
        conn.execute("DELETE FROM faces")
    conn.close()


def test_pending_faces_are_readable_by_the_owner_only_wherever_the_outbox_is(tmp_path: Path) -> None:
    """Faces are personal data. Outside the component's 0700 work folder (outbox.dir, `facecap send --outbox`)
    the files followed the umask: under 022 any local user could copy outbox.db and read every pending crop,
    or hold outbox.lock and keep the detector from starting."""
    older = tmp_path / "older"
    older.mkdir()
    (older / FILE_NAME).touch(mode=0o644)  # left by a facecap that did not narrow it
    (older / "outbox.lock").touch(mode=0o644)
    previous = os.umask(0o022)
    try:
        for folder in (tmp_path / "sdcard" / "outbox", older):
            outbox = Outbox(folder)
            outbox.capture(faces(2))
            files = {p.name: stat.S_IMODE(p.stat().st_mode) for p in folder.iterdir()}
            outbox.close()
            assert {name for name in files} >= {FILE_NAME, "outbox.lock", f"{FILE_NAME}-wal"}
            assert set(files.values()) == {0o600}, files
        assert stat.S_IMODE((tmp_path / "sdcard" / "outbox").stat().st_mode) == 0o700
    finally:
        os.umask(previous)


def test_a_receipt_does_not_write_the_crops_it_frees_again(tmp_path: Path) -> None:
    """A Jetson's flash wears with every write. SQLite builds with secure_delete on (Debian's) zeroed each
    delivered crop's pages, which wrote it a second time: 45 MB per 20 MB of crops instead of 5."""
    def written() -> int:
        with open("/proc/self/io") as io:
            return next(int(line.split()[1]) for line in io if line.startswith("write_bytes"))

    outbox = Outbox(tmp_path)
    batch = faces(400, size=20_000)
    outbox.capture(batch[:200])
    outbox.delivered([f.face_id for f in batch[:200]])  # pages freed once, as in a running outbox
    outbox.capture(batch[200:])
    before = written()
    for start in range(200, 400, 20):
        outbox.delivered([f.face_id for f in batch[start:start + 20]])
    freed = written() - before
    outbox.close()
    crops = 200 * 20_000
    print(f"\nreceipts for {crops / 1e6:.0f} MB of crops wrote {freed / 1e6:.1f} MB")
    assert freed < 0.5 * crops


def test_a_lock_file_of_another_owner_that_we_may_write_still_works(tmp_path: Path) -> None:
    """A shared outbox folder with a lock left group-writable by another user: usable, just not ours to narrow
    (narrowing it failed with a bare PermissionError and the producer could not start)."""
    if os.geteuid() != 0:
        unavailable("needs root, to play two users", "CI must run as root")
    with folder_for_two_users("facecap-shared-outbox-", 0o777) as folder:
        lock = folder / "outbox.lock"
        lock.touch()
        lock.chmod(0o666)  # root's, writable by all

        def claim_it() -> str:
            claim(lock).close()
            return "claimed"

        assert as_nobody(claim_it) == "claimed"


def test_one_outbox_has_one_owner(tmp_path: Path) -> None:
    owner = Outbox(tmp_path)
    with pytest.raises(OutboxBusyError, match=f"in use by another process \\(pid {os.getpid()}\\)"):
        Outbox(tmp_path)
    owner.close()
    Outbox(tmp_path).close()  # free again once the owner closed it (or died)


def test_the_outbox_folder_is_the_configured_one_or_the_work_folder(tmp_path: Path) -> None:
    from facecap.outbox.config import WORK_DIR_ENV

    assert OutboxSettings(dir=str(tmp_path)).folder({}) == tmp_path
    # Under Greengrass the recipe sets FACECAP_WORK_DIR to {work:path}.
    assert OutboxSettings().folder({WORK_DIR_ENV: "/greengrass/v2/work/x"}) == Path("/greengrass/v2/work/x/outbox")
    assert OutboxSettings().folder({}) == Path("outbox")


def test_a_short_disk_says_so_once_and_not_that_the_empty_outbox_is_full(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    outbox = Outbox(tmp_path, OutboxSettings(min_free_bytes=10**18))  # no disk has that much free
    for face in faces(3):
        with pytest.raises(OutboxWriteError, match=r"bytes free, less than outbox\.minFreeBytes"):
            outbox.capture([face])
    assert "is full" not in caplog.text and "room again" not in caplog.text
    assert outbox.counts().evicted == 0
    outbox.close()


def test_a_folder_removed_under_a_running_outbox_does_not_stop_its_faces(tmp_path: Path) -> None:
    """The free-space check asks the folder; SQLite still writes to the open file (as it did before the check)."""
    folder = tmp_path / "outbox"
    outbox = Outbox(folder)
    shutil.rmtree(folder)
    assert outbox.capture(faces(1)) == [True]
    outbox.close()


def test_an_outbox_of_another_user_is_said_to_be_so_not_a_refusing_disk() -> None:
    """`facecap outbox status` run by an operator on ggc_user's 0600 outbox: it named a full or failing disk."""
    if os.geteuid() != 0:
        unavailable("needs root, to play two users", "CI must run as root")
    with folder_for_two_users("facecap-others-outbox-") as folder:
        outbox = Outbox(folder / "outbox")
        outbox.capture(faces(1))
        outbox.close()
        (folder / "outbox").chmod(0o755)
        said = as_nobody(lambda: str(read_status(folder / "outbox")))
    assert f"OutboxReadError: {folder / 'outbox' / FILE_NAME} cannot be read by uid {NOBODY}" in said, said
    assert "sudo -u ggc_user" in said
    assert "disk" not in said and "damaged" not in said
