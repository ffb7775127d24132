"""Free space: checked before each write, and a full disk turned into one clear error.

chDB and LMDB do not all fail cleanly when the disk fills (chDB can leave an empty metadata file
behind, or wait forever for a mutation it cannot schedule), so every write stage first looks at
the free space of the filesystem it writes to, and refuses with :class:`DiskFull` when that is
below what the work needs plus a floor (``Settings.min_free_mb``). Errors that still come from a
full disk (ENOSPC, chDB's NOT_ENOUGH_SPACE, LMDB's EIO on a full disk) become the same error.

A failure record is written when the disk is already full: a ballast file (``state/.reserve``,
1 MiB, really allocated) is made at the start of each run while there is room, and released to
let the records of that run's failed shards in (``release_reserve``).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shlex
from collections.abc import Iterator
from pathlib import Path

MB = 1 << 20
RESERVE_BYTES = 1 << 20
# what one row costs on disk, per stage (estimates; the floor covers their error)
IMAGE_BYTES = 48 << 10  # a 256 px JPEG in the LMDB cache, with its record and page slack
STATUS_BYTES = 512  # a row of fetch/<shard>.parquet
_FULL_WORDS = ("NOT_ENOUGH_SPACE", "No space left on device", "Cannot reserve", "Disk quota")


class DiskFull(OSError):
    """A write that the disk has no room for; the message says how much is free where, how
    much the work needs, and what to do."""

    def __init__(self, message: str) -> None:
        super().__init__(errno.ENOSPC, message)

    def __str__(self) -> str:
        return str(self.strerror)

    def __reduce__(self) -> tuple:  # across processes (pool workers) with its one argument
        return (type(self), (self.strerror,))


def free_bytes(path: str | os.PathLike[str]) -> int:
    """Bytes an unprivileged writer may still use on the filesystem of ``path`` (or of its
    nearest existing parent)."""
    st = os.statvfs(_existing(Path(path)))
    return st.f_bavail * st.f_frsize


def _existing(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _mount(path: Path) -> Path:
    path = _existing(path)
    while not os.path.ismount(path) and path != path.parent:
        path = path.parent
    return path


def describe_mb(n: float) -> str:
    """Bytes as MB, with two decimals below 10 MB (0.02 MB free says more than 0 MB)."""
    mb = n / MB
    return f"{mb:,.2f} MB" if mb < 10 else f"{mb:,.0f} MB"


def advice(data_root: Path | None) -> str:
    """What a person can do about a full disk."""
    move = (
        f", or move the data dir to a bigger disk (mv it, then "
        f"{shlex.join(['promptlake', 'resume', '--data-dir', 'NEW_PLACE'])})"
        if data_root
        else ""
    )
    return f"free space there{move}"


def message(path: Path, *, free: int, need: int, what: str, data_root: Path | None) -> str:
    """``0.02 MB free on /mnt (the data dir /mnt/pl), need about 31 MB for load shard 00004:
    free space there, or move the data dir …``."""
    where = f" ({'the data dir' if data_root else 'the store'} {data_root or path})"
    return (
        f"{describe_mb(free)} free on {_mount(path)}{where}, need about {describe_mb(need)} "
        f"for {what}: {advice(data_root)}"
    )


def check(
    path: str | os.PathLike[str],
    *,
    need: int,
    floor: int,
    what: str,
    data_root: Path | None = None,
) -> None:
    """Raise :class:`DiskFull` when the filesystem of ``path`` has less than ``need`` bytes
    plus the ``floor`` free (``floor`` 0 and ``need`` 0: no check)."""
    if need <= 0 and floor <= 0:
        return
    free = free_bytes(path)
    if free < need + floor:
        raise DiskFull(
            message(Path(path), free=free, need=need + floor, what=what, data_root=data_root)
        )


def is_full_disk(exc: BaseException, path: str | os.PathLike[str]) -> bool:
    """Whether ``exc`` is a full disk speaking: ENOSPC/EDQUOT, chDB's NOT_ENOUGH_SPACE, or an
    I/O error (LMDB reports a full disk as EIO) while less than a MiB is free."""
    if isinstance(exc, DiskFull):
        return True
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(exc)
    if any(word in text for word in _FULL_WORDS):
        return True
    io_error = "Input/output error" in text or getattr(exc, "errno", None) == errno.EIO
    return io_error and free_bytes(path) < MB


@contextlib.contextmanager
def translated(
    path: str | os.PathLike[str], *, what: str, data_root: Path | None = None
) -> Iterator[None]:
    """Turn a full disk's error inside into :class:`DiskFull`, naming ``what`` was written."""
    try:
        yield
    except DiskFull:
        raise
    except Exception as exc:
        if not is_full_disk(exc, path):
            raise
        raise as_disk_full(exc, path, what=what, data_root=data_root) from exc


def as_disk_full(
    exc: BaseException, path: str | os.PathLike[str], *, what: str, data_root: Path | None
) -> DiskFull:
    """A full disk's error (``is_full_disk``) as a :class:`DiskFull` saying what to do."""
    if isinstance(exc, DiskFull):
        return exc
    free = free_bytes(path)
    cause = " ".join(str(exc).split())[:200]
    text = message(Path(path), free=free, need=free + MB, what=what, data_root=data_root)
    return DiskFull(text.replace(", need about", f" ({cause}), need about", 1))


def reserve_path(state: Path) -> Path:
    return state / ".reserve"


def make_reserve(state: Path, *, floor: int) -> bool:
    """Allocate the ballast ``state/.reserve`` when it is missing and the disk has room for it
    beyond the ``floor``; returns whether it is there now."""
    path = reserve_path(state)
    if path.exists():
        return True
    state.mkdir(parents=True, exist_ok=True)
    if free_bytes(state) < RESERVE_BYTES + floor:
        return False
    tmp = path.with_name(".reserve.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.posix_fallocate(fd, 0, RESERVE_BYTES)  # blocks really allocated, not a hole
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
        return False
    return True


def release_reserve(state: Path) -> bool:
    """Free the ballast so that what must be written on a full disk fits; whether there was
    one."""
    try:
        reserve_path(state).unlink()
    except FileNotFoundError:
        return False
    return True
