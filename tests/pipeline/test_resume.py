"""The acceptance run: 5,000 rows (~2% bad), ~10% misbehaving URLs, through fetch and embed with
the real CLI and flow; a SIGKILL mid-fetch, another mid-embed, then reruns: nothing lost,
nothing duplicated, and a final rerun that sends no request and does no model work."""

import os
import signal
import subprocess
import sys
import time
from collections import Counter

import numpy as np
import pyarrow.parquet as pq

from promptlake.storage.datadir.image_cache import ImageCache
from promptlake.storage.datadir.layout import DataDir
from promptlake.storage.datadir.markers import Markers
from promptlake.storage.datadir.planfiles import rejects_path
from promptlake.storage.datadir.vectors import read_vectors
from promptlake.tasks.clip.encoder import get_encoder
from tests.conftest import write_csv
from tests.helpers import ROOT

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


def _ingest(csv_path, data_dir, env, log):
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
    with open(log, "ab") as out:  # a file, not a pipe: nobody reads while the child runs
        return subprocess.Popen(
            cmd, cwd=ROOT, env=env, start_new_session=True, stdout=out, stderr=subprocess.STDOUT
        )


def _kill_when(proc, ready, what, log):
    deadline = time.monotonic() + 240
    while not ready():
        assert proc.poll() is None, f"finished before {what}: " + log.read_text()[-3000:]
        assert time.monotonic() < deadline, f"never reached {what}"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def test_sigkill_mid_fetch_and_mid_embed_then_rerun(tmp_path, server, tiny_clip):
    server.slow_seconds = 1.0
    rows, deliverable = _rows(server)
    csv_path = write_csv(tmp_path / "p.csv", rows)
    data_dir = tmp_path / "d"
    log = tmp_path / "ingest.log"
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp_path / "ph"),
        "PROMPTLAKE_READ_TIMEOUT": "0.3",
        "PROMPTLAKE_BACKOFF_BASE": "0.02",
        "PROMPTLAKE_FETCH_PER_HOST": "16",
        "PYTHONPATH": str(ROOT),
        "PROMPTLAKE_CLIP_MODEL": tiny_clip,
        "PROMPTLAKE_DEVICE": "cpu",
    }
    env.pop("PREFECT_API_URL", None)
    proc = _ingest(csv_path, data_dir, env, log)
    _kill_when(proc, lambda: sum(server.served_ok.values()) >= 1500, "mid-fetch", log)
    data = DataDir(data_dir)
    assert len(Markers(data, "fetch").all_done()) < 10, "killed too late to test a resume"
    cache = ImageCache.open(data.image_cache)
    all_ids = [r[0] for r in rows if r[0]]
    before = cache.records(all_ids)
    ok_before = {rid for rid, rec in before.items() if rec.ok}
    assert ok_before
    requests_before = Counter(server.requests)

    ns = get_encoder(tiny_clip, "cpu").info.namespace
    embedded = Markers(data, f"embed/{ns}")
    proc = _ingest(csv_path, data_dir, env, log)
    _kill_when(proc, lambda: len(embedded.all_done()) >= 1, "mid-embed", log)
    assert len(embedded.all_done()) < 10, "killed too late to test an embed resume"

    proc = _ingest(csv_path, data_dir, env, log)
    assert proc.wait(timeout=400) == 0, log.read_text()[-3000:]

    # every input row is a shard row or a reject with a reason
    rejects = pq.read_table(rejects_path(data)).to_pylist()
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
    # only images in flight at a kill (2 shards x a window of 2 x 16, per kill: fetch runs ahead
    # of embed, so the mid-embed kill can interrupt fetches too) were served again, and no image
    # more than once per run (two killed runs, one final)
    again = [p for p, n in server.served_ok.items() if n > 1 and not p.startswith("/cut/")]
    assert len(again) <= 2 * (2 * 2 * 16), again
    assert all(server.served_ok[p] <= 3 for p in again)  # /cut/ is "served" once per attempt
    # one text vector per valid row and one image vector per fetched image, each exactly once
    text_ids, image_ids = [], []
    for shard in sorted(embedded.all_done()):
        ids, vecs = read_vectors(data.vectors(ns, "text", shard))
        text_ids += ids
        assert np.allclose(np.linalg.norm(vecs, axis=1), 1, atol=1e-5)
        image_ids += read_vectors(data.vectors(ns, "image", shard))[0]
    assert len(embedded.all_done()) == 10
    assert sorted(text_ids) == sorted(ids_all := [r["id"] for r in status_rows])
    assert len(set(ids_all)) == len(ids_all)
    assert sorted(image_ids) == sorted(ok)
    # the store holds each valid row once and each fetched image once
    from promptlake.storage.datadir.status import status

    report = status(data)
    assert report["store"] == {"prompts": N - 100, "images": len(deliverable)}
    assert "tables" in report["stages"]["index"]
    # a last run sends no request and does no model work
    seen = sum(server.requests.values())
    stamps = {p: p.stat().st_mtime_ns for p in (data.root / "embed").rglob("*.parquet")}
    logged = log.stat().st_size
    proc = _ingest(csv_path, data_dir, env, log)
    assert proc.wait(timeout=300) == 0
    assert "Loading weights" not in log.read_text()[logged:]  # not even the model was loaded
    assert sum(server.requests.values()) == seen
    assert {p: p.stat().st_mtime_ns for p in (data.root / "embed").rglob("*.parquet")} == stamps
    assert all(embedded.read(s).seconds > 0 for s in embedded.all_done())
