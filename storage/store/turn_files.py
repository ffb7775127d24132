"""The files of a store's turn, shared by all processes (see ``storage.store.turns``): the lock, the
holder's note and the queue of waiters. No threads, no chDB: status reads them too."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shlex
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from promptlake.storage.datadir.layout import write_json
from promptlake.storage.store.hits import StoreBusy, StoreUnavailable

POLL = 0.05  # seconds between a waiter's looks at the queue
FIRST_REPORT, REPORT_EVERY = 1.0, 5.0  # a shorter wait says nothing; then a line this often
ADVICE = (
    "wait for it to finish and try again, allow a longer wait (PROMPTLAKE_STORE_WAIT, seconds), "
    "or, for heavy concurrent use, serve the store from a ClickHouse server "
    "(PROMPTLAKE_STORE_URL=clickhouse://…, same SQL)"
)
Say = Callable[[str], None]


def command_line() -> str:
    """This process's command line: who holds the store when the caller did not say."""
    return shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]])[:200] if sys.argv else "python"


def say_on_stderr(line: str) -> None:
    print(f"promptlake: {line}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Holder:
    """Who holds (or waits for) a store: process, command or flow run, unit of work, since."""

    pid: int
    who: str
    unit: str  # empty: the process keeps the store open between units
    since: float
    long: bool = False
    host: str = ""

    def describe(self) -> str:
        at = time.strftime("%H:%M:%S", time.localtime(self.since))
        what = f"{self.unit}, a long hold" if self.long else self.unit
        what = what or "idle, hands it over when asked"
        return f"pid {self.pid} ({self.who}; {what}) since {at} ({time.time() - self.since:.0f} s)"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def _try_flock(path: Path, mode: int, *, create: bool = False) -> int | None:
    """An fd of ``path`` holding a ``mode`` flock, or None when another holds a conflicting one.
    FileNotFoundError unless ``create``."""
    fd = os.open(path, (os.O_RDWR | os.O_CREAT) if create else os.O_RDONLY, 0o644)
    try:
        fcntl.flock(fd, mode | fcntl.LOCK_NB)
        return fd
    except BlockingIOError:
        os.close(fd)
        return None


class TurnFiles:
    """The files of one store's turn (see the module docstring); no Prefect, no chDB."""

    def __init__(self, store_path: str | os.PathLike[str]) -> None:
        self.store = Path(store_path)
        self.dir = Path(f"{self.store}.turn")
        self.lock, self.info, self.queue = (
            self.dir / "lock",
            self.dir / "holder.json",
            self.dir / "waiters",
        )

    def holder(self) -> Holder | None:
        """The live holder, or None: free, or held by a process that has not said who it is
        yet. Never blocks; stale files (a dead holder) are never believed."""
        try:
            h = Holder(**json.loads(self.info.read_text()))
        except (OSError, ValueError, TypeError):
            return None
        if not _alive(h.pid):
            return None
        try:
            probe = _try_flock(self.lock, fcntl.LOCK_SH)  # can share it: nobody holds it
        except FileNotFoundError:
            return None
        if probe is not None:
            os.close(probe)
            return None
        return h

    def waiting(self, *, but: str = "") -> list[tuple[str, Holder | None]]:
        """The live waiters' tickets in order, with who they are; dead ones are removed."""
        try:
            names = sorted(n for n in os.listdir(self.queue) if not n.startswith("."))
        except FileNotFoundError:
            return []
        out: list[tuple[str, Holder | None]] = []
        for name in names:
            if name == but:
                continue
            try:
                probe = _try_flock(self.queue / name, fcntl.LOCK_EX)
            except FileNotFoundError:  # its owner got the turn or gave up
                continue
            if probe is not None:  # its owner died (the kernel dropped its lock)
                (self.queue / name).unlink(missing_ok=True)
                os.close(probe)
                continue
            try:
                out.append((name, Holder(**json.loads((self.queue / name).read_text()))))
            except (OSError, ValueError, TypeError):
                out.append((name, None))
        return out

    def others_waiting(self) -> bool:
        mine = f"-{os.getpid()}-"
        return any(mine not in name for name, _ in self.waiting())

    def take(self, me: Holder, *, deadline: float, say: Say) -> int:
        """Queue for the lock and take it, first come first served: the lock's fd. Raises
        StoreBusy, naming the holder, when ``deadline`` (monotonic) passes first."""
        try:
            self.queue.mkdir(parents=True, exist_ok=True)
        except PermissionError as exc:
            raise StoreUnavailable(f"permission denied for the store {self.store}: {exc}") from exc
        ticket, fd = self._announce(me)
        started = time.monotonic()
        report = started + FIRST_REPORT
        try:
            while True:
                ahead = [w for w in self.waiting(but=ticket) if w[0] < ticket]
                lock = None if ahead else _try_flock(self.lock, fcntl.LOCK_EX, create=True)
                if lock is not None:
                    with contextlib.suppress(OSError):  # a full disk: the holder goes unnamed
                        write_json(self.info, asdict(me), durable=False)
                    return lock
                now = time.monotonic()
                if now >= deadline:
                    raise StoreBusy(self.busy(ahead, now - started))
                if now >= report:
                    say(
                        f"waiting for the store {self.store}: {self.who(ahead)}; "
                        f"waited {now - started:.0f} s of {deadline - started:.0f} s"
                    )
                    report = now + REPORT_EVERY
                time.sleep(POLL)
        finally:
            (self.queue / ticket).unlink(missing_ok=True)
            os.close(fd)

    def _announce(self, me: Holder) -> tuple[str, int]:
        """A ticket file, locked before it gets its name so that it never looks dead."""
        ticket = f"{time.time_ns():020d}-{os.getpid()}-{threading.get_ident()}"
        tmp = self.queue / f".{ticket}"
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)
        with contextlib.suppress(OSError):  # a full disk: the waiter goes unnamed
            os.write(fd, json.dumps(asdict(me)).encode())
        os.replace(tmp, self.queue / ticket)
        return ticket, fd

    def who(self, ahead: list[tuple[str, Holder | None]]) -> str:
        holder = self.holder()
        text = f"held by {holder.describe()}" if holder else "held by a process starting up"
        if ahead:
            first = ahead[0][1]
            text += f"; {len(ahead)} waiting before this one" + (
                f" (first: {first.describe()})" if first else ""
            )
        return text

    def busy(self, ahead: list[tuple[str, Holder | None]], waited: float) -> str:
        return (
            f"the store {self.store} is busy: {self.who(ahead)}. Waited "
            f"{waited:.0f} s for it; {ADVICE}"
        )

    def release(self, fd: int) -> None:
        self.info.unlink(missing_ok=True)  # before the unlock: never a stale name on a free lock
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
