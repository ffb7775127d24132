"""Ctrl-C at the terminal, at every stage: SIGINT to the command's whole process group (its
temporary Prefect server and worker processes included), as a terminal sends it. The command
ends within 10 s with exit status 130 and one line — what finished, the command that resumes —
with no traceback and no process left behind; a rerun then completes with every row once."""

from __future__ import annotations

import re
import signal
import sys
import time
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from promptlake.settings import Settings, store_url
from promptlake.storage.datadir.layout import DataDir
from promptlake.storage.datadir.markers import Markers
from promptlake.storage.store import open_store
from promptlake.storage.store.turn_files import TurnFiles
from tests.conftest import write_csv
from tests.helpers.cli_proc import ROOT, Cli, Ended

LIMIT = 10.0  # seconds from Ctrl-C to the end: the spec
SHARDS, PER_SHARD = 8, 40


def assert_stopped(ended: Ended, data_dir: Path, how: str = "Ctrl-C", code: int = 130) -> str:
    """Exit 130 within the limit, nothing on stdout, one line on stderr naming the resume."""
    assert ended.code == code, ended.err[-3000:]
    assert ended.seconds < LIMIT, f"took {ended.seconds:.1f} s"
    assert "Traceback" not in ended.out + ended.err
    assert ended.out == ""
    assert len(ended.err_lines) == 1, ended.err
    line = ended.err_lines[0]
    assert line.startswith(f"promptlake: stopped ({how}); "), line
    assert f"resume with: promptlake resume --data-dir {data_dir}" in line
    log = line.rsplit("(log: ", 1)[1].rstrip(")")
    assert Path(log).parent == data_dir / "logs" and Path(log).exists()
    assert "KeyboardInterrupt" not in Path(log).read_text()  # no worker died of the signal
    return line


@pytest.fixture
def cli(tmp_path, tiny_clip) -> Cli:
    return Cli(
        tmp_path,
        PROMPTLAKE_CLIP_MODEL=tiny_clip,
        PROMPTLAKE_DEVICE="cpu",
        PROMPTLAKE_PRECISION="fp32",
        PROMPTLAKE_READ_TIMEOUT="5",
    )


def _dataset(tmp_path: Path, server, kinds=("img", "img", "slow", "img")) -> Path:
    rows = []
    for i in range(SHARDS * PER_SHARD):
        url = server.url(kinds[i % len(kinds)], f"r{i}")
        rows.append([f"r{i:04d}", f"prompt {i}, a lighthouse, oil painting", url, 512, 512, "s"])
    return write_csv(tmp_path / "p.csv", rows)


def _holder(url: str, *args: str):
    import subprocess

    return subprocess.Popen(
        [sys.executable, "-m", "tests.helpers.turn_holder", url, "--hold", "-1", *args],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def _waiting_for(files: TurnFiles, unit: str) -> bool:
    return any(h and h.unit.startswith(unit) for _, h in files.waiting())


def _release(holder) -> None:
    holder.stdin.write("go\n")
    holder.stdin.flush()
    holder.wait(timeout=120)


def test_ctrl_c_at_fetch_embed_load_and_index_then_a_rerun_completes(tmp_path, server, cli):
    server.slow_seconds = 1.0
    src, d = _dataset(tmp_path, server), tmp_path / "d"
    data = DataDir(d)
    args = ["ingest", str(src), "--data-dir", str(d), "--shard-size", str(PER_SHARD)]
    args += ["--workers", "4"]
    fetched = Markers(data, "fetch")

    # fetch: shard tasks in worker processes, some images slow to come
    proc = cli.start(*args)
    line = assert_stopped(cli.interrupt(proc, lambda: sum(server.served_ok.values()) >= 12), d)
    assert len(fetched.all_done()) < SHARDS and "fetch " in line

    # embed: the first vectors written, not every shard embedded
    embed_dir = d / "embed"
    proc = cli.start(*args)
    stopped = cli.interrupt(proc, lambda: embed_dir.exists() and any(embed_dir.rglob("*.parquet")))
    assert_stopped(stopped, d)
    assert len(Markers(data, "load").all_done()) == 0

    # load: another process holds the store; the first load waits for its turn
    url = store_url(Settings(data_dir=d))
    files = TurnFiles(d / "store")
    holder = _holder(url)
    assert holder.stdout.readline().strip() == "held"
    proc = cli.start(*args)
    assert_stopped(cli.interrupt(proc, lambda: _waiting_for(files, "load shard")), d)
    _release(holder)
    assert cli.run(*args, "--until", "load").code == 0

    # index: the store taken again right after the reconcile, so the index waits its turn
    first = _holder(url)
    assert first.stdout.readline().strip() == "held"
    proc = cli.start(*args)
    deadline = time.monotonic() + 300
    while not _waiting_for(files, "reconcile"):
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    second = _holder(url)  # queues behind the ingest's reconcile
    while len(files.waiting()) < 2:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    _release(first)
    assert second.stdout.readline().strip() == "held"
    assert_stopped(cli.interrupt(proc, lambda: _waiting_for(files, "index")), d)
    _release(second)
    assert not (d / "state" / "index" / "store.json").exists()

    # the rerun: everything, each row once
    done = cli.run("resume", "--data-dir", str(d))
    assert done.code == 0, done.err[-3000:]
    assert "resume:   nothing to rerun" in done.out
    _each_row_once(data, url)


def _each_row_once(data: DataDir, url: str) -> None:
    rows = SHARDS * PER_SHARD
    status = [
        r["id"]
        for p in (data.root / "fetch").glob("*.parquet")
        for r in pq.read_table(p).to_pylist()
    ]
    assert len(status) == len(set(status)) == rows
    client = open_store(url).client
    for table in ("prompts", "images"):
        count, unique = client.query(
            f"SELECT count(), uniqExact(id) FROM promptlake.{table}"
        ).result_rows[0]
        assert count == unique == rows, table


@pytest.mark.parametrize("runner", ["thread", "dask"])
def test_ctrl_c_with_other_runners(tmp_path, server, cli, runner):
    server.slow_seconds = 1.0
    src, d = _dataset(tmp_path, server), tmp_path / "d"
    args = ["ingest", str(src), "--data-dir", str(d), "--shard-size", str(PER_SHARD)]
    args += ["--workers", "4", "--runner", runner, "--until", "fetch"]
    proc = cli.start(*args)
    assert_stopped(cli.interrupt(proc, lambda: sum(server.served_ok.values()) >= 12), d)
    assert cli.run(*args).code == 0
    status = Counter(
        r["id"] for p in (d / "fetch").glob("*.parquet") for r in pq.read_table(p).to_pylist()
    )
    assert len(status) == SHARDS * PER_SHARD and set(status.values()) == {1}


def test_a_second_ctrl_c_ends_at_once(tmp_path, server, cli):
    server.slow_seconds = 3.0
    src, d = _dataset(tmp_path, server, kinds=("slow",)), tmp_path / "d"
    proc = cli.start("ingest", str(src), "--data-dir", str(d), "--until", "fetch")
    ended = cli.interrupt(proc, lambda: sum(server.requests.values()) >= 4, times=2)
    assert_stopped(ended, d)


def test_sigterm_mid_embed_stops_like_ctrl_c_then_a_rerun_completes(tmp_path, server, cli):
    """SIGTERM to the command alone (``docker stop``, systemd, a Prefect cancel): the same stop
    as a Ctrl-C — within seconds, one line naming it, exit 143, workers and the temporary server
    ended — and the rerun completes."""
    server.slow_seconds = 1.0

    def url(i: int) -> str:
        return server.url("slow" if i % 4 == 2 else "img", f"t{i}")

    rows = [[f"t{i:03d}", f"prompt {i}, a harbour", url(i), 512, 512, "s"] for i in range(80)]
    src, d = write_csv(tmp_path / "t.csv", rows), tmp_path / "d"
    args = ["ingest", str(src), "--data-dir", str(d), "--shard-size", "20"]
    args += ["--workers", "4", "--until", "embed"]
    embed_dir = d / "embed"
    proc = cli.start(*args)
    embedding = lambda: embed_dir.exists() and any(embed_dir.rglob("*.parquet"))  # noqa: E731
    ended = cli.interrupt(proc, embedding, sig=signal.SIGTERM, group=False)
    line = assert_stopped(ended, d, how="SIGTERM", code=143)
    assert "embed " in line
    log = Path(line.rsplit("(log: ", 1)[1].rstrip(")")).read_text()
    assert "TerminationSignal" not in log  # the runners stopped it, no task died of it
    done = cli.run("resume", "--data-dir", str(d))
    assert done.code == 0, done.err[-3000:]
    assert "embed:    4 done, 0 failed, 0 pending shards" in done.out, done.out
    ids = Counter(
        i
        for p in (d / "embed").glob("*/text/*.parquet")
        for i in pq.read_table(p)["id"].to_pylist()
    )
    assert len(ids) == 80 and set(ids.values()) == {1}


def test_ctrl_c_mid_download_then_the_download_resumes(tmp_path, server, cli):
    body = _csv_bytes(tmp_path, server, 4000)
    server.files["p.csv"] = body
    server.trickle["p.csv"] = 0.05
    d = tmp_path / "d"
    args = ["ingest", server.url("file", "p.csv"), "--data-dir", str(d), "--until", "plan"]
    part = d / "source" / "p.csv.part"
    proc = cli.start(*args)
    assert_stopped(cli.interrupt(proc, lambda: part.exists() and part.stat().st_size > 0), d)
    server.trickle.clear()
    done = cli.run(*args)
    assert done.code == 0, done.err[-3000:]
    assert (d / "source" / "p.csv").read_bytes() == body
    assert server.range_requests  # it went on from where it stopped
    _plan_has_each_row_once(DataDir(d), 4000)


def test_ctrl_c_mid_plan_then_the_plan_is_made_once(tmp_path, server, cli):
    src, d = tmp_path / "big.csv", tmp_path / "d"
    src.write_bytes(_csv_bytes(tmp_path, server, 80_000))
    args = ["ingest", str(src), "--data-dir", str(d), "--until", "plan", "--shard-size", "5000"]
    proc = cli.start(*args)
    planning = lambda: (d / "plan").exists() and not (d / "plan" / "manifest.json").exists()  # noqa: E731
    assert_stopped(cli.interrupt(proc, planning), d)
    assert not (d / "plan" / "manifest.json").exists()
    assert cli.run(*args).code == 0
    _plan_has_each_row_once(DataDir(d), 80_000)


def _csv_bytes(tmp_path: Path, server, n: int) -> bytes:
    rows = [
        [f"r{i}", f"prompt {i}, a cat", server.url("img", f"r{i}"), 512, 512, "s"] for i in range(n)
    ]
    return write_csv(tmp_path / f"rows{n}.csv", rows).read_bytes()


def _plan_has_each_row_once(data: DataDir, n: int) -> None:
    ids = [
        r
        for p in (data.root / "plan" / "shards").glob("*.parquet")
        for r in pq.read_table(p)["id"].to_pylist()
    ]
    assert len(ids) == len(set(ids)) == n


def test_ctrl_c_stops_a_watch_and_a_feedback_run(tmp_path, cli):
    """``ingest-images --watch`` between two scans, and ``feedback`` waiting for the store:
    each stops in one line; the feedback run done again writes each variant once."""
    from tests.helpers.metadata_files import picture, png

    folder, d = tmp_path / "pictures", tmp_path / "d"
    folder.mkdir()
    for i in range(6):
        text = f"a watercolor fox number {i}\nSteps: 20, Sampler: Euler a, Seed: {i}"
        (folder / f"fox{i}.png").write_bytes(png({"parameters": text}, picture(seed=i)))
    proc = cli.start(
        "ingest-images", str(folder), "--data-dir", str(d), "--watch", "--interval", "1"
    )
    err = Path(proc.files[1])  # type: ignore[attr-defined]
    ended = cli.interrupt(proc, lambda: "watch: " in err.read_text())
    assert ended.code == 130 and ended.seconds < LIMIT and "Traceback" not in ended.err
    assert ended.err_lines[0] == f"watch: {folder}: +6 added, 0 changed, -0 removed"
    assert ended.err_lines[-1].startswith("promptlake: stopped (Ctrl-C); shards done: fetch 1/1")
    assert f"resume with: promptlake ingest-images {folder} --data-dir {d} --watch" in ended.err
    assert len(ended.err_lines) in (2, 3)  # a second round may have said "no change"

    url, files = store_url(Settings(data_dir=d)), TurnFiles(d / "store")
    holder = _holder(url)
    assert holder.stdout.readline().strip() == "held"
    args = ["feedback", "a fox in the snow", "a fox at night", "-n", "2", "--data-dir", str(d)]
    proc = cli.start(*args)
    ended = cli.interrupt(proc, lambda: _waiting_for(files, "feedback"))
    _release(holder)
    assert ended.code == 130 and ended.seconds < LIMIT and ended.out == ""
    assert len(ended.err_lines) == 1 and "Traceback" not in ended.err
    assert ended.err_lines[0].startswith(
        "promptlake: stopped (Ctrl-C); 0 feedback inputs written back; the rest with: "
        "promptlake feedback 'a fox in the snow' 'a fox at night' -n 2 --data-dir "
    )
    done = cli.run(*args)
    assert done.code == 0, done.err[-3000:]
    written = int(re.search(r"feedback: 2 inputs, (\d+) prompts written back", done.out)[1])
    rows = open_store(url).client.query(
        "SELECT count(), uniqExact(id) FROM promptlake.prompts WHERE origin = 'feedback'"
    )
    assert rows.result_rows[0] == (written, written) and written >= 2
