"""The ``promptlake`` command as a person at a terminal runs it: a real process in its own
session, its output in files; Ctrl-C as a terminal sends it (SIGINT to the whole group)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil

from tests.helpers import ROOT


@dataclass
class Ended:
    """How a command ended: its exit status, seconds from the (first) Ctrl-C, its output."""

    code: int
    seconds: float
    out: str
    err: str

    @property
    def err_lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.strip()]


class Cli:
    """Runs ``python -m promptlake.cli`` with ``env`` on top of this process's environment
    (without a Prefect API: each run starts its temporary server, as for a new user)."""

    def __init__(self, tmp_path: Path, **env: str) -> None:
        self.dir = tmp_path
        self.env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect-home"), **env}
        self.env.pop("PREFECT_API_URL", None)
        self.n = 0

    def start(self, *args: str) -> subprocess.Popen:
        self.n += 1
        files = (str(self.dir / f"run{self.n}.out"), str(self.dir / f"run{self.n}.err"))
        with open(files[0], "w") as out, open(files[1], "w") as err:  # files: nobody reads
            proc = subprocess.Popen(
                [sys.executable, "-m", "promptlake.cli", *args],
                cwd=ROOT,
                env=self.env,
                stdout=out,
                stderr=err,
                start_new_session=True,  # its own process group, as a shell gives a command
            )
        proc.files = files  # type: ignore[attr-defined]
        return proc

    def run(self, *args: str, timeout: float = 900) -> Ended:
        """Run to the end."""
        proc = self.start(*args)
        start = time.monotonic()
        code = proc.wait(timeout=timeout)
        return self._ended(proc, code, time.monotonic() - start)

    def interrupt(
        self,
        proc: subprocess.Popen,
        ready: Callable[[], bool],
        *,
        times: int = 1,
        sig: signal.Signals = signal.SIGINT,
        group: bool = True,
    ) -> Ended:
        """Once ``ready()``, press Ctrl-C (``times`` times, 0.3 s apart) and wait for the end;
        or send ``sig`` instead, to the command's process alone unless ``group`` (``docker
        stop`` and Prefect's cancellation signal one process). Every process the command had
        started must be gone soon after."""
        deadline = time.monotonic() + 600
        while not ready():
            if proc.poll() is not None:
                raise AssertionError("ended before Ctrl-C: " + self._ended(proc, 0, 0).err[-3000:])
            assert time.monotonic() < deadline, "the moment for Ctrl-C never came"
            time.sleep(0.02)
        kids = psutil.Process(proc.pid).children(recursive=True)
        start = time.monotonic()
        for i in range(times):
            if i:
                time.sleep(0.3)
            if group:
                os.killpg(proc.pid, sig)
            else:
                os.kill(proc.pid, sig)
        try:
            code = proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            raise AssertionError(f"still running 120 s after {sig.name}") from None
        seconds = time.monotonic() - start
        _, alive = psutil.wait_procs(kids, timeout=15)  # the resource tracker ends after it
        left = [" ".join(p.cmdline())[:120] for p in alive if _running(p)]
        for p in alive:
            p.kill()
        assert not left, f"processes left behind: {left}"
        return self._ended(proc, code, seconds)

    @staticmethod
    def _ended(proc: subprocess.Popen, code: int, seconds: float) -> Ended:
        out, err = (Path(f).read_text(errors="replace") for f in proc.files)  # type: ignore[attr-defined]
        return Ended(code, seconds, out, err)


def _running(p: psutil.Process) -> bool:
    try:
        return p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
