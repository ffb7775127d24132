"""The issue's acceptance run: 5,000 rows (~2% bad), ~10% misbehaving URLs, a SIGKILL mid-fetch,
then a rerun through the real CLI and flow: nothing lost, nothing duplicated."""

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq

from storage.image_cache import ImageCache
from storage.layout import DataDir
from storage.markers import Markers
from tests.conftest import write_csv

ROOT = Path(__file__).resolve().parents[1]
N = 5000
BAD_KINDS = ["404", "500", "429", "trunc", "html", "slow", "dead", "redirect", "cut", "loop"]
DELIVERABLE = {"img", "500", "429", "redirect"}
BAD_ROWS = [("", "p"), ("x", ""), ("x", "url"), ("x", "size"), ("dup", "p")]


def _rows(server):
    """Rows and the ids of rows whose image the server can deliver."""
    rows, deliverable = [], set()
    for i in range(N):
        rid = f"r{i:05d}"
        if i % 50 == 7:  # 2% bad rows, five kinds
            kind = BAD_ROWS[(i // 50) % 5]
            rid = "r00000" if kind[0] == "dup" else (kind[0] and rid)
            url = "not-a-url" if kind[1] == "url" else server.url("img", rid or "x")
            width = "wide" if kind[1] == "size" else 512
            rows.append([rid, "" if kind[1] == "" else f"bad {i}", url, width, 512, "s"])
            continue
        kind = BAD_KINDS[(i // 10) % 10] if i % 10 == 3 else "img"  # 10% misbehave
        if kind in DELIVERABLE:
            deliverable.add(rid)
        rows.append([rid, f"prompt {i}, digital art", server.url(kind, rid), 512, 512, "site"])
    return rows, deliverable


def _ingest(csv_path, data_dir, env):
    cmd = [
        sys.executable,
        "-m",
        "promptlake.cli",
        "ingest",
        str(csv_path),
        "--data-dir",
        str(data_dir),
        "--shard-size",
        "500",
        "--workers",
        "16",
    ]
    return subprocess.Popen(
        cmd,
        cwd=ROOT,
        env=env,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def test_sigkill_mid_fetch_then_rerun_loses_and_duplicates_nothing(tmp_path, server):
    server.slow_seconds = 1.0
    rows, deliverable = _rows(server)
    csv_path = write_csv(tmp_path / "p.csv", rows)
    data_dir = tmp_path / "d"
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp_path / "ph"),
        "PROMPTLAKE_READ_TIMEOUT": "0.3",
        "PROMPTLAKE_BACKOFF_BASE": "0.02",
        "PROMPTLAKE_FETCH_PER_HOST": "16",
        "PYTHONPATH": str(ROOT),
    }
    env.pop("PREFECT_API_URL", None)
    proc = _ingest(csv_path, data_dir, env)
    deadline = time.monotonic() + 240
    while sum(server.served_ok.values()) < 1500:
        assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
        assert time.monotonic() < deadline, "fetch never got going"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    data = DataDir(data_dir)
    assert len(Markers(data, "fetch").all_done()) < 10, "killed too late to test a resume"
    cache = ImageCache.open(data.image_cache)
    all_ids = [r[0] for r in rows if r[0]]
    before = cache.records(all_ids)
    ok_before = {rid for rid, rec in before.items() if rec.ok}
    assert ok_before
    requests_before = Counter(server.requests)

    proc = _ingest(csv_path, data_dir, env)
    out = proc.communicate(timeout=400)[0].decode()
    assert proc.returncode == 0, out[-3000:]

    # every input row is a shard row or a reject with a reason
    rejects = pq.read_table(data.rejects).to_pylist()
    assert Counter(r["reason"] for r in rejects) == {
        "missing_id": 20,
        "empty_prompt": 20,
        "invalid_url": 20,
        "bad_size": 20,
        "duplicate_id": 20,
    }
    status_rows = [
        r
        for p in sorted((data.root / "fetch").glob("*.parquet"))
        for r in pq.read_table(p).to_pylist()
    ]
    assert len(status_rows) + len(rejects) == N
    ids = [r["id"] for r in status_rows]
    assert len(ids) == len(set(ids)) == N - 100  # exactly one status per row
    # every image the server can deliver is in the cache; nothing else is
    ok = {r["id"] for r in status_rows if r["status"] == "ok"}
    assert ok == deliverable
    assert set(cache.images(ids)) == deliverable
    # nothing that had succeeded before the kill was requested again
    for rid in ok_before:
        path = [p for p in requests_before if p.endswith("/" + rid)]
        assert all(server.requests[p] == requests_before[p] for p in path), rid
    # at most the images in flight at the kill (2 shards x a window of 2 x 16) were served twice
    twice = [p for p, n in server.served_ok.items() if n > 1 and not p.startswith("/cut/")]
    assert len(twice) <= 2 * 2 * 16, twice
    assert all(server.served_ok[p] == 2 for p in twice)  # /cut/ is "served" once per attempt
    # a third run sends no request at all
    seen = sum(server.requests.values())
    proc = _ingest(csv_path, data_dir, env)
    assert proc.wait(timeout=300) == 0
    assert sum(server.requests.values()) == seen
