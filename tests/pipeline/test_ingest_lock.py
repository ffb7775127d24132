"""One ingest per data dir at a time: the lock between processes (who holds it, a bounded wait,
a holder killed by SIGKILL frees it at once), and two ingests of two sources into one data dir
through the real CLI: the second says at once who holds it, or waits its turn, and the store
ends equal to the last source, never a mix. A killed flow process leaves no worker writing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import psutil
import pytest
from prefect.settings import PREFECT_API_URL

from promptlake.settings import Settings, store_url
from promptlake.storage.datadir.ingest_lock import DataDirBusy, holder, ingest_lock
from promptlake.storage.datadir.layout import DataDir
from promptlake.storage.store import open_store
from tests.conftest import write_csv
from tests.helpers import ROOT

HOLD = """
import sys
from promptlake.storage.datadir.ingest_lock import ingest_lock
from promptlake.storage.datadir.layout import DataDir
with ingest_lock(DataDir(sys.argv[1]), who="the holder", what="ingest x.csv", wait=0, say=print):
    print("ready", flush=True)
    sys.stdin.readline()
"""


def _holder(data: DataDir) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(data.root)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert proc.stdout.readline().strip() == "ready"
    return proc


def test_the_lock_names_its_holder_waits_its_turn_and_dies_with_it(tmp_path):
    data = DataDir(tmp_path / "d")
    assert holder(data) is None
    proc = _holder(data)
    try:
        held = holder(data)
        assert (held.pid, held.who, held.what) == (proc.pid, "the holder", "ingest x.csv")
        with (
            pytest.raises(DataDirBusy) as busy,
            ingest_lock(data, who="me", what="ingest y.csv", wait=0, say=print),
        ):
            pass
        said = str(busy.value)
        assert f"ingest x.csv by the holder, pid {proc.pid} on host " in said
        assert "--wait SECONDS" in said and busy.value.exit_code == 75
        waiting, got = threading.Event(), threading.Event()

        def take() -> None:
            with ingest_lock(
                data, who="me", what="y", wait=120, say=lambda _: waiting.set(), every=0
            ):
                got.set()

        taker = threading.Thread(target=take)
        taker.start()
        assert waiting.wait(60) and not got.is_set()  # it waits, saying who holds the dir
        proc.stdin.write("go\n")
        proc.stdin.flush()
        taker.join(120)
        assert got.is_set() and holder(data) is None  # its turn came, and it let go
        proc.wait(60)
        proc = _holder(data)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert holder(data) is None  # the kernel freed it; its note is ignored
        with ingest_lock(data, who="me", what="z", wait=0, say=print) as note:
            assert holder(data) == note
    finally:
        proc.kill()
        proc.wait()


def _ingest(tmp_path, source, data_dir, clip, *flags, runner="thread"):
    """`promptlake ingest` in its own session, against the test's Prefect server."""
    env = {
        **os.environ,
        "PREFECT_API_URL": PREFECT_API_URL.value(),
        "PROMPTLAKE_CLIP_MODEL": clip,
        "PROMPTLAKE_DEVICE": "cpu",
        "PROMPTLAKE_TASK_RETRIES": "0",
    }
    cmd = [sys.executable, "-m", "promptlake.cli", "ingest", str(source), "--data-dir", data_dir]
    cmd += ["--shard-size", "4", "--runner", runner, *flags]
    out = open(tmp_path / f"ingest-{time.monotonic_ns()}.log", "w+")  # noqa: SIM115
    proc = subprocess.Popen(
        cmd, env=env, cwd=ROOT, stdout=out, stderr=out, text=True, start_new_session=True
    )
    proc.log = out  # type: ignore[attr-defined]
    return proc


def _held_by(data: DataDir) -> int | None:
    note = holder(data)
    return note.pid if note else None


def _until(ready, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not ready():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def _rows(server, prefix: str, n: int, kind: str = "img") -> list:
    return [
        [f"{prefix}{i}", f"{prefix} prompt {i}", server.url(kind, f"{prefix}{i}"), 64, 64, "s"]
        for i in range(n)
    ]


@pytest.mark.timeout(900)
@pytest.mark.usefixtures("prefect_server")
def test_two_ingests_into_one_data_dir_take_turns_and_never_mix(tmp_path, server, tiny_clip):
    server.slow_seconds = 3.0
    x = write_csv(tmp_path / "x.csv", _rows(server, "x", 8, kind="slow"))
    y = write_csv(tmp_path / "y.csv", _rows(server, "y", 6))
    data_dir = str(tmp_path / "d")
    data = DataDir(data_dir)
    first = _ingest(tmp_path, x, data_dir, tiny_clip)
    _until(lambda: _held_by(data) == first.pid, 180, "the first to hold it")
    started = time.monotonic()
    at_once = _ingest(tmp_path, y, data_dir, tiny_clip)
    assert at_once.wait(120) == 75
    said = _log(at_once).strip().splitlines()[-1]
    assert said.startswith("promptlake: error: the data dir") and f"pid {first.pid}" in said
    assert f"ingest {x} (until index)" in said and time.monotonic() - started < 60
    queued = _ingest(tmp_path, y, data_dir, tiny_clip, "--wait", "600")
    assert first.wait(400) == 0, _log(first)[-3000:]
    assert queued.wait(400) == 0, _log(queued)[-3000:]
    store = open_store(store_url(Settings(data_dir=data_dir)))
    with store.turn("test check", wait=120):
        ids = store.client.query("SELECT id FROM promptlake.prompts").result_rows
    assert sorted(i for (i,) in ids) == sorted(f"y{i}" for i in range(6))  # Y alone, once each

    # the flow's process killed: the lock is free at once, its workers end soon after
    again = _ingest(tmp_path, x, data_dir, tiny_clip, runner="process")
    _until(lambda: _workers(again.pid), 300, "the worker processes")
    _until(lambda: _held_by(data) == again.pid, 60, "the lock")
    workers = _workers(again.pid)
    os.kill(again.pid, signal.SIGKILL)  # the flow's process alone: its workers are orphaned
    again.wait()
    assert holder(data) is None
    _, alive = psutil.wait_procs(workers, timeout=30)
    assert not alive, [p.cmdline() for p in alive]


def _workers(pid: int) -> list[psutil.Process]:
    try:
        kids = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []
    return [p for p in kids if "spawn_main" in " ".join(p.cmdline())]


def _log(proc) -> str:
    proc.log.seek(0)
    return proc.log.read()
