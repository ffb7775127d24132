"""One ingest per data dir at a time, however it starts (the CLI, a deployment, a schedule, a
folder watch, resume): an exclusive ``flock`` on ``state/ingest.lock``, taken before the ingest
writes anything. The kernel drops it when its process ends, even by SIGKILL, so a dead holder
never blocks anyone. The file also holds the holder's note (who, what, since when), for those
who wait and for ``status``.

The file is never removed: a second process could then lock a new file while the first still
holds the old, unlinked one, and both would run. The search page and other readers never take
it (their own notes live in ``state/running/``).
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from promptlake.storage.datadir.layout import DataDir

POLL = 0.25  # seconds between tries while waiting


@dataclass(frozen=True)
class LockNote:
    """Who holds a data dir: ``who`` (a flow run or a command line), ``what`` it does."""

    pid: int = 0
    host: str = ""
    who: str = "a process that is starting up"
    what: str = "ingest"
    since: float = 0.0

    def describe(self) -> str:
        """``ingest p.csv (until index) by flow run 'brave-fox' (ingest), pid 4242 on host h,
        since 10:02:13 (4 min)``."""
        if not self.pid:
            return f"{self.what} by {self.who}"
        at = time.strftime("%H:%M:%S", time.localtime(self.since))
        minutes = max(0.0, time.time() - self.since) / 60
        return (
            f"{self.what} by {self.who}, pid {self.pid} on host {self.host}, since {at} "
            f"({minutes:.0f} min)"
        )


class DataDirBusy(RuntimeError):
    """Another ingest holds the data dir; the message names it and says what to do."""

    exit_code = 75  # EX_TEMPFAIL: try again later

    def __init__(self, data: DataDir, holder: LockNote, waited: float = 0.0) -> None:
        tried = f" (waited {waited:.0f} s)" if waited else ""
        super().__init__(
            f"the data dir {data.root} is busy{tried}: {holder.describe()}. Wait for it "
            f"(`promptlake status --data-dir {data.root}` shows its progress), queue behind it "
            "(--wait SECONDS at the terminal; the wait parameter or PROMPTLAKE_INGEST_WAIT for "
            "a flow run), or stop that run."
        )
        self.holder = holder


def lock_path(data: DataDir) -> Path:
    return data.root / "state" / "ingest.lock"


def holder(data: DataDir) -> LockNote | None:
    """Who holds ``data`` now, or None; never waits."""
    try:
        fd = os.open(lock_path(data), os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _read(fd)
    else:  # free: whatever note is there is a dead holder's
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _read(fd: int) -> LockNote:
    try:
        return LockNote(**json.loads(os.pread(fd, 65536, 0) or b"{}"))
    except (ValueError, TypeError):  # being written, or written by another version
        return LockNote()


@contextmanager
def ingest_lock(
    data: DataDir,
    *,
    who: str,
    what: str,
    wait: float,
    say: Callable[[str], None],
    every: float = 30.0,
) -> Iterator[LockNote]:
    """Hold ``data`` for one ingest. While another holds it, wait up to ``wait`` seconds,
    saying who holds it every ``every`` seconds; then raise :class:`DataDirBusy` (at once when
    ``wait`` is 0)."""
    path = lock_path(data)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)  # never truncated by opening: see above
    try:
        _acquire(fd, data, wait=wait, say=say, every=every)
        note = LockNote(os.getpid(), socket.gethostname(), who, what, time.time())
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(asdict(note)).encode(), 0)
        try:
            yield note
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _acquire(
    fd: int, data: DataDir, *, wait: float, say: Callable[[str], None], every: float
) -> None:
    start = time.monotonic()
    said = start
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            pass
        waited = time.monotonic() - start
        if waited >= wait:
            raise DataDirBusy(data, _read(fd), waited if wait else 0.0)
        if time.monotonic() - said >= every:
            said = time.monotonic()
            say(
                f"waiting for the data dir {data.root}: {_read(fd).describe()}; waited "
                f"{waited:.0f} s of {wait:.0f} s"
            )
        time.sleep(min(POLL, max(0.0, wait - waited)))
