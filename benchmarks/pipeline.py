"""Whole-pipeline benchmark: the real `promptlake ingest` end to end on N generated rows.

N rows of sample prompts whose images a loopback fault server serves from its own process (small
images from a bounded pool; --fault-rate of the URLs misbehave: 404, 500 then OK, 429 then OK,
HTML, a truncated JPEG) go through `promptlake ingest` in a subprocess, with default settings and
the tiny CLIP of promptlake.tiny_clip. Measured (see benchmarks/pipeline_figures.py):
- per stage: its window, rows/s, work (marker seconds) and how busy its slots were;
- orchestration overhead: wall time not spent in stage work (idle, or a ready shard waiting
  while a slot was free);
- memory per process of the tree (flow, workers, Prefect server): peak USS and PSS, during the
  shard stages and the index build apart, and a timeline over the shard stages;
- disk per area of the data dir, and the Prefect database;
- the index build, `promptlake status`, a cold `promptlake search` (a new process) and warm
  searches on `promptlake ui`.
A baseline run of --baseline-n rows (default N/5; 0: none) goes first, in the same invocation:
the N run's memory, rows/s and times are also given as ratios to it (flat memory: each
process's peak within 1.2x). The last line is one JSON object with every figure.

    make bench-pipeline                                  # N=100000, baseline 20000
    BENCH_ARGS="--n 900000 --baseline-n 100000" make bench-pipeline
"""

from __future__ import annotations

import argparse
import csv
import json
import multiprocessing as mp
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import pipeline_figures as fig  # noqa: E402
from benchmarks.fetch import make_urls  # noqa: E402

ENV = {"DO_NOT_TRACK": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
POOL = 1000  # distinct images the server draws from: its memory stays flat in N


def _serve(size: tuple[int, int], ready: mp.Queue) -> None:
    from tests.helpers.fault_server import FaultServer, make_image

    class PoolServer(FaultServer):
        """The fault server, drawing each name's image from a pool of ``POOL`` small ones."""

        def image(self, name: str, fmt: str = "JPEG") -> bytes:
            key = (str(zlib.crc32(name.encode()) % POOL), fmt)
            with self._lock:
                if key not in self._images:
                    self._images[key] = make_image(key[0], size=size, fmt=fmt)
                return self._images[key]

    with PoolServer() as srv:
        ready.put(srv.base)
        threading.Event().wait()


def write_source(path: Path, base: str, n: int, fault_rate: float) -> int:
    """N rows of sample prompts and image URLs; returns how many images can be delivered."""
    from promptlake.sample_data import SITES, sample_prompts

    rows, deliverable = make_urls(base, n, fault_rate)
    with open(path, "w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["id", "prompt", "url", "width", "height", "source_site"])
        for i, ((rid, url), prompt) in enumerate(zip(rows, sample_prompts(n), strict=True)):
            out.writerow([rid, prompt, url, 512, 512, SITES[i % len(SITES)]])
    return deliverable


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "promptlake.cli", *args]


def ingest(work: Path, source: Path, clip: str, flags: list[str]) -> tuple[dict, fig.TreeSampler]:
    """Run `promptlake ingest` (default settings, but ``flags``), sampling its process tree."""
    env = {**os.environ, **ENV, "PREFECT_HOME": str(work / "prefect")}
    log = work / "ingest.log"
    data_dir = str(work / "data")
    with open(log, "wb") as out:
        start = time.time()
        proc = subprocess.Popen(
            cli("ingest", str(source), "--data-dir", data_dir, "--model", clip, *flags),
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
        sampler = fig.TreeSampler(proc.pid)
        sampler.start()
        code = proc.wait()
        end = time.time()
        sampler.stop()
    if code:
        raise SystemExit(f"ingest failed ({code}): {log.read_text()[-3000:]}")
    return {"start": start, "end": end}, sampler


def timed(cmd: list[str]) -> tuple[float, str]:
    t = time.perf_counter()
    done = subprocess.run(
        cmd, env={**os.environ, **ENV}, capture_output=True, text=True, timeout=900
    )
    if done.returncode:
        raise SystemExit(f"{' '.join(cmd[3:])} failed: {done.stderr[-2000:]}")
    return time.perf_counter() - t, done.stdout


def queries(data_dir: Path, queries_n: int) -> dict:
    """`promptlake status` (new process, and the function alone), a cold CLI search (median of
    3 new processes) and warm searches on `promptlake ui` (one keep-alive client)."""
    import signal

    from benchmarks.ui import client, start_page
    from promptlake.sample_data import sample_prompts
    from promptlake.storage.datadir.layout import DataDir
    from promptlake.storage.datadir.status import status

    status_cli, _ = timed(cli("status", "--data-dir", str(data_dir)))
    t = time.perf_counter()
    status(DataDir(data_dir))
    status_fn = time.perf_counter() - t
    texts = [f"{p}, take {i}" for i, p in enumerate(sample_prompts(queries_n + 3, seed=7))]
    cold = [timed(cli("search", q, "--data-dir", str(data_dir)))[0] for q in texts[:3]]
    proc, url, ui_start = start_page(data_dir)
    try:
        client(url, texts[:10], 10)  # connections, caches
        warm, failed, took = client(url, texts[3:], 10)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    return {
        "status_cli_s": round(status_cli, 2),
        "status_fn_s": round(status_fn, 3),
        "cold_search_s": round(statistics.median(cold), 2),
        "ui_start_s": round(ui_start, 1),
        "warm_search_p50_ms": round(statistics.median(warm), 1),
        "warm_search_server_p50_ms": round(statistics.median(took), 1) if took else None,
        "warm_failed": failed,
    }


def status_of_many(work: Path, shards: int) -> dict:
    """`promptlake status` (a new process) on a data dir of ``shards`` shards of markers, against
    a new process that only imports what it imports (the same run's baseline)."""
    from tests.helpers.marker_dirs import build_marker_dir

    data = build_marker_dir(work / f"markers{shards}", shards, failed=3)
    status = statistics.median(
        timed(cli("status", "--data-dir", str(data.root)))[0] for _ in range(3)
    )
    imports = [sys.executable, "-c", "import promptlake.cli, promptlake.storage.datadir.status"]
    alone = statistics.median(timed(imports)[0] for _ in range(3))
    print(f"status of {shards} shards: {status:.2f} s (its imports alone {alone:.2f} s)")
    return {"shards": shards, "status_s": round(status, 2), "imports_s": round(alone, 2)}


def run(n: int, args: argparse.Namespace, base: str, clip: str, work: Path) -> dict:
    """One whole ingest of ``n`` rows and its figures."""
    from promptlake.settings import Settings

    work.mkdir(parents=True)
    source = work / "prompts.csv"
    deliverable = write_source(source, base, n, args.fault_rate)
    print(f"\n== {n:,} rows ({deliverable:,} images deliverable), load {os.getloadavg()[0]:.1f}")
    flags = ["--shard-size", str(args.shard_size)] if args.shard_size else []
    times, sampler = ingest(work, source, clip, flags)
    data_dir, db = work / "data", work / "prefect" / "prefect.db"
    s = Settings()
    limits = {"fetch": s.shard_concurrency, "embed": s.gpu_slots, "load": 1}
    runs, spans = fig.task_runs(db), fig.marker_spans(data_dir)
    first = min(a for st in fig.SHARDED for a, _ in runs[st])
    last = max(b for a, b in runs["load"])
    index = runs["index"][0]
    index_marker = json.loads((data_dir / "state" / "index" / "store.json").read_text())
    out = {
        "rows": n,
        "wall_s": round(times["end"] - times["start"], 1),
        "stages": fig.stage_figures(spans, runs, limits),
        "overhead": fig.overhead(spans, runs, limits, times["start"], times["end"]),
        "index_build_s": round(sum(t["seconds"] for t in index_marker["tables"].values()), 1),
        "memory": sampler.memory(),
        "memory_shards": sampler.memory(first, last),
        "memory_index": sampler.memory(*index),
        "timeline_shards_uss_mib": sampler.timeline(first, last),
        "cpu_s": sampler.cpu_seconds(),
        "disk_mib": {**fig.disk(data_dir), "prefect": sum(fig.disk(work / "prefect").values())},
        "prefect_rows": fig.prefect_rows(db),
        **queries(data_dir, args.queries),
    }
    out["rows_per_s"] = round(n / out["wall_s"], 1)
    report(out)
    if not args.keep:
        shutil.rmtree(work)
    return out


def report(r: dict) -> None:
    o = r["overhead"]
    print(f"wall {r['wall_s']:,} s, {r['rows_per_s']:,} rows/s end to end")
    for stage, f in r["stages"].items():
        if "rows" in f:
            print(
                f"  {stage:6} {f['shards']:4} shards  window {f['window_s']:7,} s  "
                f"{f['rows_per_s']:7,} rows/s  work {f['work_s']:7,} s  "
                f"task runs {f['task_run_s']:7,} s  slot use {f['slot_use']:.0%}"
            )
        else:
            print(f"  {stage:14} {f['window_s']:7,} s")
    print(
        f"orchestration overhead {o['overhead_s']:,} s = {o['overhead_pct']}% of the wall "
        f"(idle {o['idle_s']:,} s, slot time lost while shards waited {o['lost_slot_s']:,} s)"
    )
    print(
        f"  of which before the first stage work {o['before_work_s']} s, after the last "
        f"{o['after_work_s']} s; between them {o['within_pct']}% of the time; idle stretches "
        f"(s from start, length): {o['idle_stretches']}"
    )
    print(f"index build {r['index_build_s']} s")
    for phase in ("memory", "memory_shards", "memory_index"):
        parts = [
            f"{k} USS {v['uss_mib']:,.0f} PSS {v['pss_mib']:,.0f} (x{v['processes']})"
            for k, v in sorted(r[phase].items())
        ]
        print(f"{phase:14} MiB, peak per process: " + "; ".join(parts))
    print(f"USS over the shard stages, MiB: {r['timeline_shards_uss_mib']}")
    print(f"CPU seconds per role: {r['cpu_s']}")
    print(f"disk MiB: {r['disk_mib']}; Prefect rows: {r['prefect_rows']}")
    print(
        f"status {r['status_cli_s']} s (new process; the function {r['status_fn_s']} s); "
        f"cold search {r['cold_search_s']} s; warm search p50 {r['warm_search_p50_ms']} ms "
        f"(page start {r['ui_start_s']} s, {r['warm_failed']} failed)"
    )


def ratios(big: dict, small: dict) -> dict:
    """The N run against the baseline run: memory per role, rows/s per stage, times."""
    out: dict = {"rows": big["rows"] / small["rows"]}
    for phase in ("memory", "memory_shards"):
        out[f"{phase}_uss"] = {
            k: round(v["uss_mib"] / small[phase][k]["uss_mib"], 2)
            for k, v in big[phase].items()
            if small[phase].get(k, {}).get("uss_mib")
        }
    out["rows_per_s"] = {
        k: round(v["rows_per_s"] / small["stages"][k]["rows_per_s"], 2)
        for k, v in big["stages"].items()
        if v.get("rows_per_s") and small["stages"].get(k, {}).get("rows_per_s")
    }
    for key in ("rows_per_s", "status_cli_s", "cold_search_s", "warm_search_p50_ms"):
        out[key if key != "rows_per_s" else "end_to_end_rows_per_s"] = round(
            big[key] / small[key], 2
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--baseline-n", type=int, help="rows of the baseline run (default N/5)")
    ap.add_argument("--fault-rate", type=float, default=0.02)
    ap.add_argument("--shard-size", type=int, help="rows per shard (default: the setting's)")
    ap.add_argument("--image-size", default="256x192", help="served images, WxH")
    ap.add_argument("--queries", type=int, default=50, help="warm searches")
    ap.add_argument(
        "--clip-image-size", type=int, default=64, help="the tiny CLIP's input (as the tests)"
    )
    ap.add_argument("--status-shards", type=int, default=900, help="shards of the status check")
    ap.add_argument("--keep", action="store_true", help="keep the data dirs (printed)")
    args = ap.parse_args()
    base_n = args.n // 5 if args.baseline_n is None else args.baseline_n
    size = tuple(int(x) for x in args.image_size.split("x"))
    ready: mp.Queue = mp.get_context("spawn").Queue()
    server = mp.get_context("spawn").Process(target=_serve, args=(size, ready), daemon=True)
    server.start()
    base = ready.get(timeout=300)
    from promptlake.tiny_clip import build_clip

    work = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    print(f"{os.cpu_count()} CPUs; image server at {base}; work in {work}")
    clip = str(build_clip(work / "clip", image_size=args.clip_image_size))
    results = {}
    try:
        many = status_of_many(work, args.status_shards)
        for n in [base_n, args.n] if base_n else [args.n]:
            results[n] = run(n, args, base, clip, work / f"n{n}")
    finally:
        server.terminate()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    final = {"n": args.n, "baseline_n": base_n, "status_many": many, "run": results[args.n]}
    if base_n:
        final["baseline"] = results[base_n]
        final["ratios"] = ratios(results[args.n], results[base_n])
        print(f"\n{args.n:,} rows against {base_n:,}: {json.dumps(final['ratios'])}")
    print(json.dumps(final))


if __name__ == "__main__":
    main()
