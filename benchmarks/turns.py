"""Store turns benchmark: what sharing one embedded chDB store between processes costs.

1. open/close: a process takes the store's turn (opening the engine) and gives it back, on an
   empty store and on one of ``--n`` rows; a search right after a reopen against one on a store
   kept open (the baseline: what keeping the store open between units saves).
2. concurrent searches: N processes ask at the same moment, each for one search's turn (the
   store's part of a CLI search; the model is not loaded); time to the result against N = 1.
3. searches during a load: a process loads shards of ``--shard-rows`` rows, one turn each,
   while another searches every 0.2 s; each search's wait for its turn, and its time to the
   result, against the same searches with no load running.

    make bench-turns                            # 100k rows, no vector index
    python benchmarks/turns.py --index          # with the HNSW index (builds it: minutes)

Prints its figures and ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from search import CHUNK, DIM, chunk, rows  # noqa: E402  (benchmarks/search.py: same data)

from promptlake.storage.store import open_store  # noqa: E402
from promptlake.storage.store.dialects import IndexParams  # noqa: E402

CENTRES = np.random.default_rng(0).normal(size=(1000, DIM))
CENTRES /= np.linalg.norm(CENTRES, axis=1, keepdims=True)


def ms(xs: list[float], q: float = 50) -> float:
    return round(float(np.percentile(xs, q)) * 1000, 1)


def timed_turns(url: str, cycles: int) -> tuple[list[float], list[float]]:
    """Open (take the turn) and close (give it back) ``cycles`` times: seconds each."""
    store, opens, closes = open_store(url), [], []
    for _ in range(cycles):
        t = time.perf_counter()
        with store.turn("bench open", wait=60):
            store.client.query("SELECT 1")
        t2 = time.perf_counter()
        store.close()
        opens.append(t2 - t)
        closes.append(time.perf_counter() - t2)
    return opens, closes


def searches(url: str, n: int, *, reopen: bool) -> list[float]:
    store, out = open_store(url), []
    for q in chunk(777, n, CENTRES):
        t = time.perf_counter()
        store.search("prompts", q.tolist(), 10)
        out.append(time.perf_counter() - t)
        if reopen:
            store.close()
    store.close()
    return out


def worker(args: argparse.Namespace) -> None:
    """One benchmark process: searches (each its own turn) or shard loads (each a turn)."""
    store, done = open_store(args.store), []
    Path(f"{args.out}.ready").touch()
    while not Path(args.go).exists():  # every worker has started: all ask at the same moment
        time.sleep(0.001)
    if args.worker == "load":
        for i in range(args.shards):
            table = rows(1000 + i, chunk(1000 + i, args.shard_rows, CENTRES))
            with store.turn(f"load shard {i}", who="bench loader", wait=600):
                store.load_shard("prompts", f"bench-{i:05d}", table)
        return
    for q in chunk(args.seed, args.count, CENTRES):
        t = time.perf_counter()
        with store.turn("search", who="bench search", wait=600):
            t2 = time.perf_counter()
            store.search("prompts", q.tolist(), 10)
        done.append((t2 - t, time.perf_counter() - t))
        if args.until and Path(args.until).exists():
            break
        time.sleep(args.pause)
    Path(args.out).write_text(json.dumps(done))


def spawn(kind: str, url: str, out: Path, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, __file__, "--worker", kind, "--store", url, "--out", str(out)]
    return subprocess.Popen([*cmd, "--go", str(out.parent / "go"), *extra])


def start(outs: list[Path]) -> None:
    """Let the workers writing ``outs`` go once all of them are ready."""
    go = outs[0].parent / "go"
    go.unlink(missing_ok=True)
    while not all(Path(f"{o}.ready").exists() for o in outs):
        time.sleep(0.01)
    go.touch()


def concurrent(url: str, n: int, tmp: Path) -> list[float]:
    outs = [tmp / f"c{n}-{i}.json" for i in range(n)]
    procs = [spawn("search", url, out, "--seed", str(i)) for i, out in enumerate(outs)]
    start(outs)
    assert all(p.wait() == 0 for p in procs)
    return [json.loads(out.read_text())[0][1] for out in outs]


def during_load(url: str, args: argparse.Namespace, tmp: Path) -> dict:
    out: dict = {}
    for label in ("alone", "loading"):
        flag, outs = tmp / f"{label}.done", [tmp / f"{label}.json"]
        count = ("--count", str(args.searches), "--pause", "0.2", "--until", str(flag))
        searcher = spawn("search", url, outs[0], *count)
        if label == "loading":
            sizes = ("--shards", str(args.shards), "--shard-rows", str(args.shard_rows))
            outs.append(tmp / "loader.json")
            loader = spawn("load", url, outs[1], *sizes)
        start(outs)
        if label == "loading":
            assert loader.wait() == 0
            flag.touch()
        assert searcher.wait() == 0
        got = json.loads((tmp / f"{label}.json").read_text())
        out[label] = {"wait": [w for w, _ in got], "total": [t for _, t in got]}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--index", action="store_true", help="build the HNSW index (minutes)")
    ap.add_argument("--searches", type=int, default=40)
    ap.add_argument("--shards", type=int, default=10)
    ap.add_argument("--shard-rows", type=int, default=10_000)
    ap.add_argument("--worker", choices=["search", "load"])
    ap.add_argument("--store")
    ap.add_argument("--go", help="start when this file appears")
    ap.add_argument("--out")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--count", type=int, default=1)
    ap.add_argument("--pause", type=float, default=0)
    ap.add_argument("--until")
    args = ap.parse_args()
    if args.worker:
        return worker(args)
    with tempfile.TemporaryDirectory(prefix="bench-turns-") as tmp_dir:
        tmp = Path(tmp_dir)
        empty_open, empty_close = timed_turns(f"chdb://{tmp}/empty", 20)
        url = f"chdb://{tmp}/store"
        store = open_store(url)
        store.ensure_schema("bench", DIM)
        for i in range(-(-args.n // CHUNK)):
            vecs = chunk(i, min(CHUNK, args.n - i * CHUNK), CENTRES)
            store.load_shard("prompts", f"{i:05d}", rows(i, vecs))
        if args.index:
            store.build_index("prompts", DIM, IndexParams())
        store.close()
        full_open, full_close = timed_turns(url, 20)
        warm, cold = searches(url, 20, reopen=False), searches(url, 20, reopen=True)
        report = {
            "rows": args.n,
            "index": args.index,
            "first_open_in_process_ms": round(empty_open[0] * 1000, 1),
            "open_ms": {"empty": ms(empty_open[1:]), "rows": ms(full_open)},
            "close_ms": {"empty": ms(empty_close), "rows": ms(full_close)},
            "search_kept_open_ms": ms(warm),
            "search_after_reopen_ms": ms(cold),
            "reopen_ratio": round(ms(cold) / ms(warm), 2),
        }
        print(f"{args.n:,} rows, vector index: {args.index}")
        print(f"first open in a process (the engine starts): {empty_open[0] * 1000:.0f} ms")
        print(f"open (take the turn): empty {ms(empty_open[1:])} ms, full {ms(full_open)} ms")
        print(f"close (give it back): empty {ms(empty_close)} ms, full {ms(full_close)} ms")
        print(f"search kept open {ms(warm)} ms; right after a reopen {ms(cold)} ms (p50)")
        base = None
        report["concurrent"] = {}
        for n in (1, 2, 5, 10):
            got = concurrent(url, n, tmp)
            base = base or statistics.median(got)
            report["concurrent"][n] = {"p50_ms": ms(got), "max_ms": ms(got, 100)}
            report["concurrent"][n]["ratio"] = round(max(got) / base, 2)
            print(f"{n:2} searches at once: result after p50 {ms(got)} ms, last {ms(got, 100)} ms")
        load = during_load(url, args, tmp)
        for label, got in load.items():
            report[f"searches_{label}"] = {
                "count": len(got["wait"]),
                "wait_p50_ms": ms(got["wait"]),
                "wait_p95_ms": ms(got["wait"], 95),
                "wait_max_ms": ms(got["wait"], 100),
                "total_p50_ms": ms(got["total"]),
                "total_p95_ms": ms(got["total"], 95),
            }
            print(f"searches {label}: {report[f'searches_{label}']}")
        alone, loading = report["searches_alone"], report["searches_loading"]
        report["load_ratio_p50"] = round(loading["total_p50_ms"] / alone["total_p50_ms"], 2)
        report["load_ratio_p95"] = round(loading["total_p95_ms"] / alone["total_p95_ms"], 2)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
