"""Another local user for a test, as on a device where the components run as ggc_user and an operator (or an
intruder) is someone else: a forked child that drops to `nobody` and reports back. Needs root (CI runs as
root); the caller checks that, so that a machine without it fails under CI=true instead of skipping."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

NOBODY = 65534


def as_nobody(work: Callable[[], str]) -> str:
    """What `work` returns when it runs as uid/gid NOBODY, in a child process; its exception, as text."""
    reader, writer = os.pipe()
    child = os.fork()
    if child == 0:
        try:
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            try:
                said = work()
            except Exception as exc:
                said = f"{type(exc).__name__}: {exc}"
            os.write(writer, said.encode())
        finally:
            os._exit(0)
    os.close(writer)
    os.waitpid(child, 0)
    with os.fdopen(reader, "rb") as answer:
        return answer.read().decode()


@contextlib.contextmanager
def folder_for_two_users(prefix: str, mode: int = 0o755) -> Iterator[Path]:
    """A folder the other user can reach: not under pytest's base folder, which is 0700."""
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    folder.chmod(mode)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
