"""A small disk for full-disk tests: a tmpfs mounted for the test (root only; the tests skip
without it), filled with ``fallocate`` to leave a given margin free."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

SIZE_MB = 40


class SmallDisk:
    """A ``SIZE_MB`` tmpfs at ``path``; ``fill(kb)`` leaves ``kb`` KiB free, ``unfill()`` gives
    the space back."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.filler = path / ".filler"

    def mount(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={SIZE_MB}m", "tmpfs", str(self.path)],
            check=True,
            capture_output=True,
        )

    def unmount(self) -> None:
        # lazy: this process may still hold a store or cache open there
        subprocess.run(["umount", "-l", str(self.path)], check=False, capture_output=True)

    def free_kb(self) -> int:
        st = os.statvfs(self.path)
        return st.f_bavail * st.f_frsize // 1024

    def fill(self, left_kb: int) -> int:
        """Leave about ``left_kb`` KiB free; returns what is free."""
        self.unfill()
        want = self.free_kb() - left_kb
        if want > 0:
            fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT, 0o644)
            try:
                os.posix_fallocate(fd, 0, want * 1024)
            finally:
                os.close(fd)
        return self.free_kb()

    def unfill(self) -> None:
        self.filler.unlink(missing_ok=True)

    def copy_in(self, src: Path, name: str) -> Path:
        """A copy of the folder ``src`` on the small disk (symlinks kept: chDB's are relative)."""
        target = self.path / name
        shutil.copytree(src, target, symlinks=True)
        return target


def small_disk(where: Path) -> Iterator[SmallDisk]:
    """Mount a small disk at ``where`` for a test (skip without root), unmount after it."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    disk = SmallDisk(where)
    try:
        disk.mount()
    except (subprocess.CalledProcessError, FileNotFoundError) as exc:
        pytest.skip(f"cannot mount a tmpfs here: {exc}")
    try:
        yield disk
    finally:
        disk.unmount()
