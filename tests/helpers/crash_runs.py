"""The ``promptlake`` command killed at a named write: a real ``python -m promptlake.cli`` process
in its own session, told by the test-only crash variables (``storage/datadir/crashpoints.py``)
to SIGKILL its whole process group the moment that write lands, and tracing every write point it
passes. Runs report to the session's Prefect server (no temporary server per run)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path

from promptlake.storage.datadir import crashpoints
from tests.helpers import ROOT

# written by the store's own machinery (chDB's files, the turn's holder notes) or by the run's
# presence note: not the stages' writes, never a kill point of ours
NOT_OURS = ("store/", "store.turn/", "state/running/")


@dataclass
class Run:
    """One command run: how it ended, the write points it passed, its output."""

    chain: str
    argv: list[str]
    kill_at: str | None
    code: int
    seconds: float
    points: list[str]
    err: str

    @property
    def killed(self) -> bool:
        return self.code == -signal.SIGKILL


@dataclass
class CrashRunner:
    """Runs commands on one data dir with ``env``, collecting every run."""

    data_dir: Path
    work: Path
    env: dict[str, str]
    name: str = "base"
    runs: list[Run] = field(default_factory=list)

    def run(self, *args: str, kill_at: str | None = None, timeout: float = 300) -> Run:
        """``promptlake <args> --data-dir DIR``, killed at the first write matching ``kill_at``
        (an fnmatch pattern, ``#n`` for the n-th); without it, run to the end."""
        n = len(self.runs)
        trace, err = self.work / f"trace{n}.txt", self.work / f"run{n}.err"
        env = {**self.env, crashpoints.ROOT: str(self.data_dir), crashpoints.TRACE: str(trace)}
        if kill_at:
            env[crashpoints.AT] = kill_at
        argv = [*args, "--data-dir", str(self.data_dir)]
        start = time.monotonic()
        proc = start_cli(argv, env, err)
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            raise AssertionError(f"{argv} ran over {timeout} s") from None
        points = trace.read_text().splitlines() if trace.exists() else []
        seconds = time.monotonic() - start
        run = Run(self.name, argv, kill_at, code, seconds, points, err.read_text())
        self.runs.append(run)
        return run

    def crash(self, *args: str, at: str) -> Run:
        """A run that must die at ``at``: the last point it passed is the one asked for."""
        run = self.run(*args, kill_at=at)
        assert run.killed, f"never reached {at!r} (exit {run.code}): {run.err[-2000:]}"
        pattern = at.partition("#")[0]
        assert run.points and fnmatchcase(run.points[-1], pattern), (at, run.points[-5:])
        return run

    def complete(self, *args: str) -> Run:
        run = self.run(*args)
        assert run.code == 0, f"{args} failed: {run.err[-3000:]}"
        return run


def ingest_env(tiny_clip: str, lock_dir: Path) -> dict[str, str]:
    """The environment of these tests' ingests: the session's Prefect server, the tiny CLIP on
    the CPU, shard tasks in threads."""
    from prefect.settings import PREFECT_API_URL

    env = {
        **os.environ,
        "PREFECT_API_URL": str(PREFECT_API_URL.value()),
        # a lasting server makes embed hold its Prefect GPU limit, and a killed run's lease stays
        # taken until it expires: these runs take only the per-device lock the kernel frees
        "PROMPTLAKE_PREFECT_SERVER_TEMPORARY": "1",
        "PROMPTLAKE_CLIP_MODEL": tiny_clip,
        "PROMPTLAKE_DEVICE": "cpu",
        "PROMPTLAKE_PRECISION": "fp32",
        "PROMPTLAKE_RUNNER": "thread",
        "PROMPTLAKE_FETCH_WORKERS": "4",
        "PROMPTLAKE_TASK_RETRY_DELAY": "0.5",
        "PROMPTLAKE_GPU_LOCK_DIR": str(lock_dir),
    }
    for name in (crashpoints.AT, crashpoints.ACTION, crashpoints.ROOT, crashpoints.TRACE):
        env.pop(name, None)
    return env


def start_cli(argv: list[str], env: dict[str, str], err: Path) -> subprocess.Popen:
    """``python -m promptlake.cli <argv>`` in its own session (a kill of its group never
    reaches pytest), stderr to ``err``."""
    with open(err, "w") as errf:
        return subprocess.Popen(
            [sys.executable, "-m", "promptlake.cli", *argv],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=errf,
            start_new_session=True,
        )


def write_patterns(runs: list[Run]) -> set[str]:
    """The write points the runs passed, digits as N, without the store's own files."""
    names = {p for run in runs for p in run.points if not p.startswith(NOT_OURS)}
    return {crashpoints.pattern_of(p) for p in names}


def killed_patterns(runs: list[Run]) -> set[str]:
    """The write points (digits as N) some run was killed at."""
    return {crashpoints.pattern_of(r.points[-1]) for r in runs if r.killed and r.points}
