"""Many processes, one embedded store: real processes take turns with a real chDB store.

Holders are ``tests/helpers/turn_holder.py`` processes; searches are the real ``promptlake search``
CLI. No test measures time: each checks who got the store, in what order, and what was said."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from promptlake.settings import store_url
from promptlake.storage.datadir.layout import DataDir
from promptlake.storage.datadir.status import format_status, status
from promptlake.storage.store import open_store
from promptlake.storage.store.hits import StoreBusy
from promptlake.storage.store.turn_files import TurnFiles
from promptlake.tasks import feedback
from promptlake.tasks.plan import read_shard
from promptlake.tasks.query.search import SearchRequest, search
from promptlake.tasks.runtime.turn import store_turn
from tests.helpers import ROOT

CLI_ENV = {"PROMPTLAKE_DEVICE": "cpu", "PROMPTLAKE_PRECISION": "fp32"}


@pytest.fixture
def procs():
    """Processes a test started; any still running at its end are killed."""
    started: list[subprocess.Popen] = []
    yield started
    for p in started:
        if p.poll() is None:
            p.kill()
        p.wait()


def holder(procs: list, url: str, *args: str, held: bool = True) -> subprocess.Popen:
    """Start ``tests.helpers.turn_holder``; with ``held``, return once it holds the store."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.helpers.turn_holder", url, *args],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    procs.append(proc)
    if held:
        assert proc.stdout.readline().strip() == "held", f"holder exited: {proc.wait()}"
    return proc


def queued(files: TurnFiles, n: int) -> None:
    """Wait until ``n`` processes wait in the store's queue."""
    deadline = time.monotonic() + 300
    while len(files.waiting()) < n:
        assert time.monotonic() < deadline, "the waiters never queued"
        time.sleep(0.05)


def cli_search(data: DataDir, text: str, **env: str) -> subprocess.Popen:
    where = ("--data-dir", str(data.root))
    return subprocess.Popen(
        [sys.executable, "-m", "promptlake.cli", "search", text, "-k", "3", "--json", *where],
        cwd=ROOT,
        env={**os.environ, **CLI_ENV, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_a_killed_holder_frees_its_turn_at_once(tmp_path, procs):
    url = f"chdb://{tmp_path / 'store'}"
    files = TurnFiles(tmp_path / "store")
    args = ("--hold", "-1", "--idle", "600", "--unit", "load shard 00001", "--who", "ingest x")
    h = holder(procs, url, *args)
    seen = files.holder()
    assert (seen.pid, seen.who, seen.unit) == (h.pid, "ingest x", "load shard 00001")
    report = status(DataDir(tmp_path))  # never waits for the store: reads its holder file
    assert report["store_holder"]["pid"] == h.pid
    assert f"store:    in use by pid {h.pid} (ingest x; load shard 00001)" in format_status(report)
    h.stdin.write("done\n")
    h.stdin.flush()
    assert h.stdout.readline().strip() == "released"  # its unit is over; it keeps the store open
    idle = f"in use by pid {h.pid} (ingest x; idle, hands it over when asked)"
    deadline = time.monotonic() + 60  # its watcher notes that it is idle
    while idle not in format_status(status(DataDir(tmp_path))):
        assert time.monotonic() < deadline, format_status(status(DataDir(tmp_path)))
        time.sleep(0.05)
    h.kill()
    h.wait()
    assert files.info.exists()  # its note outlives it...
    assert files.holder() is None  # ...but a dead holder is never reported
    assert status(DataDir(tmp_path))["store_holder"] is None
    store = open_store(url)
    with store.turn("after the kill", wait=0):  # no wait at all: the kernel freed it
        assert store.client.query("SELECT 1").result_rows == [(1,)]
    store.close()


def test_the_wait_is_bounded_and_the_error_names_the_holder(tmp_path, procs):
    url = f"chdb://{tmp_path / 'store'}"
    who = "flow run 'tidy-otter' (ingest)"
    h = holder(procs, url, "--unit", "index build", "--long", "--who", who)
    with (
        pytest.raises(StoreBusy) as err,
        open_store(url).turn("search", wait=1),
    ):
        pytest.fail("got a store that another process holds")
    text = str(err.value)
    assert f"held by pid {h.pid} ({who}; index build, a long hold) since " in text
    assert "PROMPTLAKE_STORE_WAIT" in text and "clickhouse://" in text
    assert TurnFiles(tmp_path / "store").waiting() == []  # it left the queue


def test_waiters_are_served_first_come_first_served(tmp_path, procs):
    url, note = f"chdb://{tmp_path / 'store'}", tmp_path / "order.txt"
    files = TurnFiles(tmp_path / "store")
    first = holder(procs, url, "--hold", "-1", "--idle", "600", "--who", "first", "--note", note)
    waiters = []
    for n, who in enumerate(["second", "third", "fourth"], 1):
        args = ("--hold", "0.2", "--who", who, "--note", note)
        waiters.append(holder(procs, url, *args, held=False))
        queued(files, n)  # each arrives after the one before it
    first.stdin.write("done\n")  # its unit ends; it stays alive, idle, and must hand over
    first.stdin.flush()
    for w in waiters:
        assert w.wait(300) == 0
    assert note.read_text().split() == ["first", "second", "third", "fourth"]
    assert first.poll() is None  # handed over while alive


@pytest.mark.timeout(900)
@pytest.mark.parametrize("n", [2, 5])
def test_cli_searches_at_once_all_succeed(data, built, n):
    _s, shards = built  # this process loaded the store: it holds it until someone waits
    rows = read_shard(data, shards[0]).to_pylist()[:n]
    searches = [cli_search(data, row["prompt"]) for row in rows]
    for row, proc in zip(rows, searches, strict=True):
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-2000:]
        assert json.loads(out)[0]["id"] == row["id"]


@pytest.mark.timeout(900)
def test_a_search_during_a_long_load_waits_says_who_and_succeeds(data, built, procs):
    s, shards = built
    url = store_url(s)
    load = (f"load shard {shards[0]}", "ingest (test)")
    # the holder loads shard 0 for real, then holds on until told: a long load
    h = holder(
        procs,
        url,
        "--hold",
        "-1",
        "--load",
        str(data.root),
        shards[0],
        "--unit",
        load[0],
        "--who",
        load[1],
    )
    row = read_shard(data, shards[0]).to_pylist()[2]
    proc = cli_search(data, row["prompt"])
    said = []
    for line in proc.stderr:  # wait until it says it waits, and for whom
        said.append(line)
        if "waiting for the store" in line:
            break
    assert f"held by pid {h.pid} ({load[1]}; {load[0]}) since " in said[-1], said
    h.stdin.write("done\n")
    h.stdin.flush()
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-2000:]
    assert json.loads(out)[0]["id"] == row["id"]

    h = holder(procs, url, "--hold", "-1", "--unit", load[0], "--who", load[1])
    busy = cli_search(data, row["prompt"], PROMPTLAKE_STORE_WAIT="1")
    out, err = busy.communicate(timeout=600)
    assert busy.returncode == 2 and out == ""
    assert f"promptlake: error: the store {data.root / 'store'} is busy: held by pid {h.pid}" in err


def test_nested_use_in_one_process_does_not_deadlock(data, built, procs):
    s, _ = built
    files = TurnFiles(data.root / "store")
    with store_turn(s, "outer unit"):
        with ThreadPoolExecutor(4) as pool:  # threads join this process's turn
            found = list(pool.map(lambda t: search(SearchRequest(text=t), data, s), "abcd"))
        assert all(len(hits) == 10 for hits in found)
        waiter = holder(procs, store_url(s), "--hold", "0", "--who", "waiter", held=False)
        queued(files, 1)  # someone waits: this process hands over after its unit, not inside
        inp = feedback.FeedbackInput("a cat on a sofa", "idea")
        opts = feedback.FeedbackOptions(n=2, k=5, llm="offline")
        stats = feedback.run_input(inp, data, s, opts)  # clear, refine → search, write: nested
        assert stats.rows == 2
        assert waiter.poll() is None  # still waiting: the unit is not over
    assert waiter.wait(300) == 0 and waiter.stdout.read().split() == ["held", "released"]


def test_threads_of_one_process_share_its_turn(tmp_path):
    store = open_store(f"chdb://{tmp_path / 'store'}")
    inside = threading.Barrier(3, timeout=60)

    def unit(i: int) -> int:
        with store.turn(f"unit {i}", wait=60):
            inside.wait()  # all three threads are inside at once
            return store.client.query("SELECT 1").result_rows[0][0]

    with ThreadPoolExecutor(3) as pool:
        assert list(pool.map(unit, range(3))) == [1, 1, 1]
    store.close()
