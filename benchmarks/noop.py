"""A rerun with nothing new against an empty run: what a nightly schedule or a folder watch pays
to learn that nothing changed.

Two data dirs, each ingested once by `promptlake ingest` (a new process, its temporary Prefect
server, default settings, the tiny CLIP, images from a loopback server): N rows in N/shard-size
shards (default 3,000 rows in 300 shards) and the *empty* baseline, 10 rows in one shard. Then
the same command again on each, with nothing new, interleaved (--rounds, default 3): the medians,
their ratio (aim: at most about 2), the cost per finished shard, and the task runs each rerun
made (read from the Prefect database: fetch/embed/load must be 0). ``--before DIR`` also times
the same rerun once with the code checked out in DIR (e.g. ``git worktree add /tmp/before
main``), on the same data dir, for the ratio against the code before. The last line is JSON.

    make bench-noop
    python benchmarks/noop.py --rows 3000 --shard-size 10 --before /tmp/before
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.pipeline import ENV, _serve, write_source  # noqa: E402

SHARDED = ("fetch", "embed", "load")


def task_runs(home: Path) -> Counter[str]:
    """Task runs so far in the Prefect database of ``home``, per task name."""
    db = home / "prefect.db"
    if not db.exists():
        return Counter()
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        names = [name for (name,) in conn.execute("SELECT name FROM task_run")]
    return Counter(name.rsplit("-", 1)[0] for name in names)


def ingest(work: Path, source: Path, data: str, clip: str, code: Path = ROOT) -> dict:
    """One `promptlake ingest` (the code in ``code``): its wall time and the task runs it made."""
    home = work / "prefect"
    env = {**os.environ, **ENV, "PREFECT_HOME": str(home), "PYTHONPATH": str(code)}
    env.pop("PREFECT_API_URL", None)
    before = task_runs(home)
    cmd = [sys.executable, "-m", "promptlake.cli", "ingest", str(source), "--data-dir", data]
    start = time.perf_counter()
    done = subprocess.run(
        [*cmd, "--model", clip, "--shard-size", str(SIZE[data])],
        env=env,
        cwd=code,
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"ingest {data} failed: {done.stderr[-3000:]}")
    made = task_runs(home) - before
    return {"s": round(seconds, 2), "task_runs": dict(made)}


SIZE: dict[str, int] = {}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=3000)
    ap.add_argument("--shard-size", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--before", type=Path, help="a checkout of the code before, timed once")
    args = ap.parse_args()
    ready: mp.Queue = mp.get_context("spawn").Queue()
    server = mp.get_context("spawn").Process(target=_serve, args=((64, 64), ready), daemon=True)
    server.start()
    base = ready.get(timeout=300)
    work = Path(tempfile.mkdtemp(prefix="bench-noop-"))
    from promptlake.tiny_clip import build_clip

    clip = str(build_clip(work / "clip", image_size=64))
    try:
        big, small = str(work / "big"), str(work / "small")
        SIZE.update({big: args.shard_size, small: 10})
        write_source(work / "big.csv", base, args.rows, 0.0)
        write_source(work / "small.csv", base, 10, 0.0)
        shards = -(-args.rows // args.shard_size)
        print(f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}; work in {work}", flush=True)
        first = ingest(work, work / "big.csv", big, clip)
        print(f"first ingest of {args.rows:,} rows in {shards} shards: {first['s']} s", flush=True)
        empty_first = ingest(work, work / "small.csv", small, clip)
        print(f"first ingest of 10 rows (the empty run's data dir): {empty_first['s']} s")
        empty, noop = [], []
        for i in range(args.rounds):
            empty.append(ingest(work, work / "small.csv", small, clip))
            noop.append(ingest(work, work / "big.csv", big, clip))
            print(f"round {i + 1}: empty {empty[-1]['s']} s, no-op {noop[-1]['s']} s", flush=True)
        out = figures(empty, noop, shards, first["s"])
        if args.before:
            old = ingest(work, work / "big.csv", big, clip, code=args.before.resolve())
            out["before_noop_s"] = old["s"]
            out["before_noop_task_runs"] = old["task_runs"]
            out["before_over_now"] = round(old["s"] / out["noop_s"], 2)
            print(f"the code before ({args.before}): no-op {old['s']} s, {old['task_runs']}")
    finally:
        server.terminate()
        shutil.rmtree(work, ignore_errors=True)
    print(
        f"no-op rerun of {shards} shards {out['noop_s']} s against an empty run "
        f"{out['empty_s']} s: {out['noop_over_empty']}x ({out['per_shard_ms']} ms per finished "
        f"shard); its shard task runs: {out['noop_sharded_task_runs']}"
    )
    print(json.dumps(out))


def figures(empty: list[dict], noop: list[dict], shards: int, first_s: float) -> dict:
    empty_s = statistics.median(r["s"] for r in empty)
    noop_s = statistics.median(r["s"] for r in noop)
    sharded = Counter()
    for r in noop:
        sharded.update({k: v for k, v in r["task_runs"].items() if k in SHARDED})
    return {
        "shards": shards,
        "first_ingest_s": first_s,
        "empty_s": round(empty_s, 2),
        "noop_s": round(noop_s, 2),
        "noop_over_empty": round(noop_s / empty_s, 2),
        "per_shard_ms": round(1000 * (noop_s - empty_s) / shards, 1),
        "noop_sharded_task_runs": dict(sharded),
        "noop_task_runs": noop[-1]["task_runs"],
        "empty_task_runs": empty[-1]["task_runs"],
        "runs": {"empty_s": [r["s"] for r in empty], "noop_s": [r["s"] for r in noop]},
    }


if __name__ == "__main__":
    main()
