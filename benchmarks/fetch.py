"""Fetch benchmark: promptlake's fetch stage against img2dataset on the same loopback server.

Both tools download the same N URLs (by default 90% good images, 10% faults: 404, 500-then-OK,
429-then-OK, HTML, truncated JPEG) from the project's fault server, running in its own process.
Each tool runs in a child process; we print images/s, success rate and peak RSS (the child's
whole process tree, sampled) and the ratios promptlake / img2dataset.

    make bench-fetch                       # N=3000
    python benchmarks/fetch.py --n 10000 --workers 32

img2dataset lives in its own virtualenv (.venv-bench): it pins a `dataclasses` backport that
breaks Python >= 3.10 packages such as pydantic, so it must not share .venv.
"""

from __future__ import annotations

import argparse
import csv
import json
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
BENCH_VENV = ROOT / ".venv-bench"
FAULTS = ["404", "500", "429", "html", "trunc"]


def _serve(names: list[str], ready: mp.Queue) -> None:
    from tests.fault_server import FaultServer

    with FaultServer() as srv:
        for name in names:  # pre-generate so neither tool pays for image synthesis
            srv.image(name)
        ready.put(srv.base)
        threading.Event().wait()


def make_urls(base: str, n: int, fault_rate: float) -> tuple[list[tuple[str, str]], int]:
    """(id, url) pairs and how many of them the server can deliver."""
    rows, deliverable, every = [], 0, max(1, round(1 / fault_rate)) if fault_rate else 0
    for i in range(n):
        kind = FAULTS[(i // every) % len(FAULTS)] if every and i % every == 0 else "img"
        deliverable += kind in ("img", "500", "429")
        rows.append((f"b{i:07d}", f"{base}/{kind}/b{i:07d}"))
    return rows, deliverable


def _measure(cmd: list[str], env: dict | None = None) -> tuple[float, int, str]:
    """Run ``cmd``; return wall seconds, peak RSS of its process tree, and its stdout."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    ps, peak = psutil.Process(proc.pid), 0
    while proc.poll() is None:
        try:
            tree = [ps, *ps.children(recursive=True)]
            peak = max(peak, sum(p.memory_info().rss for p in tree if p.is_running()))
        except psutil.Error:
            pass
        time.sleep(0.05)
    out, err = proc.communicate()
    if proc.returncode:
        raise RuntimeError(f"{cmd[0]} failed: {err.decode()[-2000:]}")
    return time.perf_counter() - start, peak, out.decode()


def run_promptlake(rows, work: Path, workers: int, shards: int, runner: str) -> dict:
    src = work / "urls.csv"
    with open(src, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "prompt", "url", "width", "height", "source_site"])
        w.writerows([rid, "bench", url, 512, 512, "bench"] for rid, url in rows)
    cmd = [
        sys.executable,
        __file__,
        "--child",
        str(src),
        str(work / f"pl-{runner}"),
        str(workers),
        str(shards),
        runner,
    ]
    seconds, peak, out = _measure(cmd)
    return {"seconds": seconds, "peak_rss": peak, **json.loads(out.strip().splitlines()[-1])}


def _fetch_shard(name: str, data_dir: str, settings):
    from promptlake.storage.layout import DataDir
    from promptlake.tasks.fetch import run_shard

    return run_shard(name, DataDir(data_dir), settings)


def _child(src: str, data_dir: str, workers: int, shards: int, runner: str) -> None:
    """In the child: plan, then fetch ``shards`` shards at a time in threads or processes,
    as the ingest flow does with ``--runner thread`` or ``--runner process``."""
    from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

    from promptlake.settings import Settings
    from promptlake.storage.layout import DataDir
    from promptlake.tasks.download import download
    from promptlake.tasks.plan import plan

    data = DataDir(data_dir)
    with open(src) as fh:
        n_rows = sum(1 for _ in fh) - 1
    m = plan(download(src, data), data, shard_size=-(-n_rows // shards))
    s = Settings(fetch_workers=workers, fetch_per_host=workers * shards, backoff_max=2.0)
    pool_cls = ProcessPoolExecutor if runner == "process" else ThreadPoolExecutor
    with pool_cls(shards) as pool:
        futures = [pool.submit(_fetch_shard, r.name, data_dir, s) for r in m.shards]
        stats = [f.result() for f in futures]
    print(json.dumps({"ok": sum(x.ok for x in stats), "total": sum(x.rows for x in stats)}))


def run_img2dataset(rows, work: Path, workers: int, processes: int) -> dict:
    exe = BENCH_VENV / "bin" / "img2dataset"
    if not exe.exists():
        raise SystemExit(f"{exe} missing: run `make bench-fetch` (it installs img2dataset there)")
    src = work / "urls_i2d.csv"
    with open(src, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["url", "key"])
        w.writerows([url, rid] for rid, url in rows)
    cmd = [
        str(exe),
        "--url_list",
        str(src),
        "--input_format",
        "csv",
        "--url_col",
        "url",
        "--output_folder",
        str(work / "i2d"),
        "--output_format",
        "webdataset",
        "--processes_count",
        str(processes),
        "--thread_count",
        str(workers),
        "--image_size",
        "256",
        "--resize_mode",
        "keep_ratio",
        "--resize_only_if_bigger",
        "True",
        "--encode_format",
        "jpg",
        "--encode_quality",
        "90",
        "--retries",
        "3",
        "--timeout",
        "15",
        "--enable_wandb",
        "False",
        "--number_sample_per_shard",
        str(max(1, len(rows) // processes // 2)),
        "--distributor",
        "multiprocessing",
    ]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    seconds, peak, _ = _measure(cmd, env)
    ok = total = 0
    for stats in (work / "i2d").glob("*_stats.json"):
        data = json.loads(stats.read_text())
        ok, total = ok + data["successes"], total + data["count"]
    return {"seconds": seconds, "peak_rss": peak, "ok": ok, "total": total}


def _report(name: str, r: dict) -> str:
    rate = r["ok"] / r["seconds"]
    return (
        f"{name:19} {r['seconds']:7.2f} s  {rate:8.1f} images/s  success "
        f"{r['ok']}/{r['total']} ({100 * r['ok'] / max(1, r['total']):.1f}%)  "
        f"peak RSS {r['peak_rss'] / 2**20:7.1f} MiB"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--fault-rate", type=float, default=0.10)
    ap.add_argument("--workers", type=int, default=32, help="threads per shard / per process")
    ap.add_argument("--shards", type=int, default=2, help="promptlake shards at once")
    ap.add_argument("--processes", type=int, default=2, help="img2dataset processes")
    ap.add_argument("--skip-img2dataset", action="store_true")
    ap.add_argument(
        "--runner",
        choices=["thread", "process", "both"],
        default="both",
        help="promptlake shards in threads of one process, or in processes",
    )
    ap.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        src, data_dir, workers, shards, runner = args.child
        return _child(src, data_dir, int(workers), int(shards), runner)
    ready: mp.Queue = mp.Queue()
    names = [f"b{i:07d}" for i in range(args.n)]
    server = mp.Process(target=_serve, args=(names, ready), daemon=True)
    server.start()
    base = ready.get(timeout=600)
    rows, deliverable = make_urls(base, args.n, args.fault_rate)
    print(f"{args.n} URLs, {deliverable} deliverable, {os.cpu_count()} CPUs; server at {base}")
    with tempfile.TemporaryDirectory(prefix="bench-fetch-") as tmp:
        work = Path(tmp)
        runners = ["thread", "process"] if args.runner == "both" else [args.runner]
        results = {}
        for runner in runners:
            results[runner] = run_promptlake(rows, work, args.workers, args.shards, runner)
            print(_report(f"promptlake/{runner}", results[runner]))
        if not args.skip_img2dataset:
            i2d = run_img2dataset(rows, work, args.workers, args.processes)
            print(_report("img2dataset", i2d))
            for runner, pl in results.items():
                speed = (pl["ok"] / pl["seconds"]) / max(1e-9, i2d["ok"] / i2d["seconds"])
                print(
                    f"ratio promptlake/{runner} : img2dataset — throughput {speed:.2f}x, "
                    f"success {pl['ok'] / max(1, i2d['ok']):.2f}x, peak RSS "
                    f"{pl['peak_rss'] / max(1, i2d['peak_rss']):.2f}x"
                )
    server.terminate()


if __name__ == "__main__":
    main()
