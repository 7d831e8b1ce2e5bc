"""A small filesystem of its own for a test: a tmpfs mounted on a folder, which can be filled up or made
read-only as a device's eMMC is (full of logs, or remounted read-only by ext4 after I/O errors). Mounting
needs root (CI runs as root, as it does for the network namespaces)."""

from __future__ import annotations

import subprocess
from pathlib import Path


class MountError(Exception):
    """The machine will not mount a tmpfs here (not root, or no mount permission)."""


class SmallFilesystem:
    def __init__(self, where: Path, size_bytes: int) -> None:
        self.path = where
        where.mkdir(parents=True, exist_ok=True)
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_bytes},mode=0755", "tmpfs", str(where)],
                                capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise MountError(result.stderr.strip() or f"mount exited {result.returncode}")

    def read_only(self, on: bool = True) -> None:
        subprocess.run(["mount", "-o", f"remount,{'ro' if on else 'rw'}", str(self.path)], check=True)

    def fill(self) -> Path:
        """Take every free byte (what is left is the filesystem's own reserve: nothing)."""
        filler = self.path / "filler"
        with open(filler, "ab") as handle:
            try:
                while True:
                    handle.write(b"\0" * 65536)
                    handle.flush()
            except OSError:
                pass
        return filler

    def unmount(self) -> None:
        subprocess.run(["umount", "-l", str(self.path)], check=False)
