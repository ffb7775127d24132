"""Fetch benchmark: promptlake's fetch stage against img2dataset on the same loopback server.

Both tools download the same N URLs (by default 90% good images, 10% faults: 404, 500-then-OK,
429-then-OK, HTML, truncated JPEG) from the project's fault server, running in its own process.
Each tool runs in a child process, ``--rounds`` times, interleaved (the machine is shared and
noisy: each round compares tools measured side by side, and the medians are reported). Per run:
images/s, success rate, CPU seconds of the tool's process tree, and memory as PSS (the tree's
sum: shared pages counted once) and the largest USS of one process, sampled every 0.2 s. The
last line is JSON.

    make bench-fetch                       # N=3000, 3 rounds
    python benchmarks/fetch.py --n 10000 --workers 32 --rounds 5

img2dataset lives in its own virtualenv (.venv-bench): it pins a `dataclasses` backport that
breaks Python >= 3.10 packages such as pydantic, so it must not share .venv.
"""

from __future__ import annotations

import argparse
import csv
import io
import itertools
import json
import multiprocessing as mp
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.append(str(ROOT))  # after PYTHONPATH: lets a run measure another checkout
BENCH_VENV = ROOT / ".venv-bench"
FAULTS = ["404", "500", "429", "html", "trunc"]


def _serve(names: list[str], ready: mp.Queue) -> None:
    from tests.helpers.fault_server import FaultServer

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


def _memory(tree: list[psutil.Process]) -> tuple[int, int]:
    """PSS summed over ``tree`` and the largest USS of one of its processes."""
    pss = uss = 0
    for proc in tree:
        try:
            info = proc.memory_full_info()
        except psutil.Error:
            continue
        pss, uss = pss + info.pss, max(uss, info.uss)
    return pss, uss


def _cpu_of_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _measure(cmd: list[str], env: dict | None = None) -> tuple[dict, str]:
    """Run ``cmd``: wall and CPU seconds of its process tree (it reaps its own children), peak
    memory (PSS of the tree, largest USS of one process), and its stdout."""
    cpu_before, start = _cpu_of_children(), time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env)
        ps, peak_pss, peak_uss = psutil.Process(proc.pid), 0, 0
        while proc.poll() is None:
            try:
                pss, uss = _memory([ps, *ps.children(recursive=True)])
                peak_pss, peak_uss = max(peak_pss, pss), max(peak_uss, uss)
            except psutil.Error:
                pass
            time.sleep(0.2)
        seconds = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        if proc.returncode:
            raise RuntimeError(f"{cmd[0]} failed: {err.read().decode()[-2000:]}")
        stdout = out.read().decode()
    cpu = _cpu_of_children() - cpu_before
    return {"seconds": seconds, "cpu": cpu, "pss": peak_pss, "uss": peak_uss}, stdout


def write_inputs(rows: list[tuple[str, str]], work: Path) -> tuple[Path, Path]:
    """The same URLs as promptlake's CSV and as img2dataset's URL list."""
    ours, theirs = work / "urls.csv", work / "urls_i2d.csv"
    with open(ours, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "prompt", "url", "width", "height", "source_site"])
        w.writerows([rid, "bench", url, 512, 512, "bench"] for rid, url in rows)
    with open(theirs, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["url", "key"])
        w.writerows([url, rid] for rid, url in rows)
    return ours, theirs


def checkout(ref: str, into: Path) -> Path:
    """promptlake at git ``ref``, laid out as installed (pyproject's package-dir), for
    PYTHONPATH: the same harness then measures that code in the same rounds."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref], capture_output=True)
    if archive.returncode:
        raise SystemExit(f"git archive {ref}: {archive.stderr.decode().strip()}")
    src, pkg = into / "src", into / "pkg"
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(src, filter="data")
    shutil.copytree(src / "promptlake", pkg / "promptlake")
    for sub in ("flows", "tasks", "storage", "deployments"):
        shutil.copytree(src / sub, pkg / "promptlake" / sub)
    return pkg


def run_promptlake(
    src: Path, out: Path, *, workers: int, shards: int, runner: str, code: Path | None = None
) -> dict:
    cmd = [sys.executable, __file__, "--child", str(src), str(out), str(workers), str(shards)]
    env = {**os.environ, "PYTHONPATH": str(code)} if code else None
    result, stdout = _measure([*cmd, runner], env)
    return {**result, **json.loads(stdout.strip().splitlines()[-1])}


def _fetch_shard(name: str, data_dir: str, settings):
    from promptlake.storage.datadir.layout import DataDir
    from promptlake.tasks.fetch import run_shard

    return run_shard(name, DataDir(data_dir), settings)


def _child(src: str, data_dir: str, workers: int, shards: int, runner: str) -> None:
    """In the child: plan, then fetch ``shards`` shards at a time in threads or processes,
    as the ingest flow does with ``--runner thread`` or ``--runner process``."""
    from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

    from promptlake.settings import Settings
    from promptlake.storage.datadir.layout import DataDir
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


def run_img2dataset(src: Path, out: Path, *, n: int, workers: int, processes: int) -> dict:
    exe = BENCH_VENV / "bin" / "img2dataset"
    if not exe.exists():
        raise SystemExit(f"{exe} missing: run `make bench-fetch` (it installs img2dataset there)")
    cmd = [
        str(exe),
        "--url_list",
        str(src),
        "--input_format",
        "csv",
        "--url_col",
        "url",
        "--output_folder",
        str(out),
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
        str(max(1, n // processes // 2)),
        "--distributor",
        "multiprocessing",
    ]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    result, _ = _measure(cmd, env)
    ok = total = 0
    for stats in out.glob("*_stats.json"):
        data = json.loads(stats.read_text())
        ok, total = ok + data["successes"], total + data["count"]
    return {**result, "ok": ok, "total": total}


def _rate(r: dict) -> float:
    return r["ok"] / r["seconds"]


def _report(name: str, r: dict) -> str:
    return (
        f"{name:27} {r['seconds']:7.2f} s  {_rate(r):7.1f} images/s  success "
        f"{r['ok']}/{r['total']} ({100 * r['ok'] / max(1, r['total']):.1f}%)  "
        f"CPU {r['cpu']:6.2f} s ({1000 * r['cpu'] / max(1, r['ok']):.2f} ms/image)  "
        f"PSS {r['pss'] / 2**20:6.1f} MiB, largest USS {r['uss'] / 2**20:6.1f} MiB"
    )


def _summary(runs: dict[str, list[dict]]) -> dict:
    """Medians per tool, and per runner the median over rounds of the same-round ratios."""
    out: dict = {}
    for name, rs in runs.items():
        out[name] = {
            "images_per_s": statistics.median(_rate(r) for r in rs),
            "success": statistics.median(r["ok"] / max(1, r["total"]) for r in rs),
            "cpu_ms_per_image": statistics.median(1000 * r["cpu"] / max(1, r["ok"]) for r in rs),
            "pss_mib": statistics.median(r["pss"] / 2**20 for r in rs),
            "uss_mib": statistics.median(r["uss"] / 2**20 for r in rs),
        }
    base = runs.get("img2dataset")
    for name, rs in runs.items():
        if base and name != "img2dataset":
            pairs = list(zip(rs, base, strict=True))
            out[name]["ratio_throughput"] = statistics.median(_rate(a) / _rate(b) for a, b in pairs)
            out[name]["ratio_cpu_per_image"] = statistics.median(
                (a["cpu"] / a["ok"]) / (b["cpu"] / b["ok"]) for a, b in pairs
            )
            out[name]["ratio_pss"] = statistics.median(a["pss"] / b["pss"] for a, b in pairs)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--fault-rate", type=float, default=0.10)
    ap.add_argument("--workers", type=int, default=32, help="threads per shard / per process")
    ap.add_argument("--shards", type=int, default=2, help="promptlake shards at once")
    ap.add_argument("--processes", type=int, default=2, help="img2dataset processes")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved repetitions")
    ap.add_argument("--skip-img2dataset", action="store_true")
    ap.add_argument(
        "--runner",
        choices=["thread", "process", "both"],
        default="both",
        help="promptlake shards in threads of one process, or in processes",
    )
    ap.add_argument(
        "--ref",
        action="append",
        default=[],
        help="also measure promptlake at this git ref (e.g. main), in the same rounds",
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
    runners = ["thread", "process"] if args.runner == "both" else [args.runner]
    runs: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-fetch-") as tmp:
        work = Path(tmp)
        ours, theirs = write_inputs(rows, work)
        codes = {"": None}
        for i, ref in enumerate(args.ref):
            codes[f"@{ref}"] = checkout(ref, work / f"ref{i}")
        for i in range(args.rounds):
            print(f"round {i + 1}/{args.rounds} (load average {os.getloadavg()[0]:.1f})")
            for (tag, code), runner in itertools.product(codes.items(), runners):
                name, out = f"promptlake{tag}/{runner}", work / "pl"
                r = run_promptlake(
                    ours, out, workers=args.workers, shards=args.shards, runner=runner, code=code
                )
                runs.setdefault(name, []).append(r)
                print(_report(name, r))
                shutil.rmtree(out)
            if not args.skip_img2dataset:
                r = run_img2dataset(
                    theirs, work / "i2d", n=args.n, workers=args.workers, processes=args.processes
                )
                runs.setdefault("img2dataset", []).append(r)
                print(_report("img2dataset", r))
                shutil.rmtree(work / "i2d")
    server.terminate()
    summary = _summary(runs)
    for name, m in summary.items():
        if "ratio_throughput" in m:
            print(
                f"median ratio {name} : img2dataset — throughput {m['ratio_throughput']:.2f}x, "
                f"CPU per image {m['ratio_cpu_per_image']:.2f}x, PSS {m['ratio_pss']:.2f}x"
            )
    print(json.dumps({"n": args.n, "rounds": args.rounds, **summary}))


if __name__ == "__main__":
    main()
