"""Search page benchmark: warm searches over HTTP against a cold CLI search, in the same run.

A data dir holding 100k prompts (synthetic clustered vectors of the tiny CLIP's dimension,
loaded straight into the store as benchmarks/search.py does) and a few thousand images with
their LMDB thumbnails, indexed. Then, in this order:
- a cold ``promptlake search`` (a new process: imports, CLIP load, store open, one query);
- ``promptlake ui`` started on a free port (CLIP loaded once, before it answers);
- the same CLI searches again, now answered through the page (a new process that finds the page
  in the data dir and asks it: no torch, no CLIP, no store), with their hits compared;
- warm ``GET /api/search`` p50/p95 from 1 client and from 8 concurrent clients (keep-alive),
  failures counted; and a page's worth of ``/img/<id>`` thumbnails.
The clients run in this process, on the same cores as the server. Ends with one JSON line.

    make bench-ui                 # BENCH_ARGS="--rows 100000 --images 3000"
"""

from __future__ import annotations

import argparse
import io
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from promptlake.sample_data import SITES, sample_image, sample_prompts  # noqa: E402
from promptlake.settings import Settings, store_url  # noqa: E402
from promptlake.storage.datadir.image_cache import ImageCache  # noqa: E402
from promptlake.storage.datadir.layout import DataDir  # noqa: E402
from promptlake.storage.datadir.records import FetchRecord  # noqa: E402
from promptlake.storage.datadir.vectors import claim_namespace, list_column  # noqa: E402
from promptlake.storage.store import open_store  # noqa: E402
from promptlake.storage.store.dialects import IndexParams  # noqa: E402
from promptlake.tasks.clip.encoder import get_encoder  # noqa: E402
from promptlake.tiny_clip import build_clip  # noqa: E402

CHUNK = 50_000
ENV = {"DO_NOT_TRACK": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}


def vectors(n: int, dim: int, seed: int, centres: np.ndarray) -> np.ndarray:
    """Unit vectors around cluster centres (CLIP-like neighbourhoods, not uniform noise)."""
    rng = np.random.default_rng(seed)
    v = centres[rng.integers(0, len(centres), n)] + 0.6 * rng.normal(size=(n, dim)) / dim**0.5
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def rows(start: int, vecs: np.ndarray, prompts: list[str], ns: str, column: str) -> pa.Table:
    n = len(vecs)
    ids = [f"r{start + j}" for j in range(n)]
    return pa.table(
        {
            "id": ids,
            "prompt": [prompts[(start + j) % len(prompts)] for j in range(n)],
            "url": [f"https://images.example/{i}.jpg" for i in ids],
            "width": pa.array([512] * n, pa.uint32()),
            "height": pa.array([512] * n, pa.uint32()),
            "source_site": [SITES[(start + j) % len(SITES)] for j in range(n)],
            "shard": [f"{start // CHUNK:05d}"] * n,
            "model": [ns] * n,
            column: list_column(vecs),
        }
    )


def build(root: Path, n_rows: int, n_images: int) -> tuple[Settings, list[str]]:
    """The data dir: namespace record, store rows, thumbnails, indexes; returns its prompts."""
    clip = str(build_clip(root / "clip", image_size=64))
    settings = Settings(data_dir=root / "data", clip_model=clip)
    data = DataDir(settings.data_dir)
    info = get_encoder(clip, "cpu").info
    record = {"model": info.name, "revision": info.revision, "dim": info.dim}
    claim_namespace(data, info.namespace, {**record, "max_tokens": info.max_tokens})
    store = open_store(store_url(settings))
    store.ensure_schema(info.namespace, info.dim)
    prompts = sample_prompts(2000, seed=11)
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(500, info.dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    t = time.perf_counter()
    for start in range(0, n_rows, CHUNK):
        vecs = vectors(min(CHUNK, n_rows - start), info.dim, start + 1, centres)
        store.load_shard(
            "prompts",
            f"{start // CHUNK:05d}",
            rows(start, vecs, prompts, info.namespace, "prompt_vector"),
        )
    vecs = vectors(n_images, info.dim, 999, centres)
    store.load_shard("images", "00000", rows(0, vecs, prompts, info.namespace, "image_vector"))
    cache = ImageCache.open(data.image_cache)
    batch = []
    for i in range(n_images):
        out = io.BytesIO()
        sample_image(prompts[i % len(prompts)]).save(out, "JPEG", quality=90)
        batch.append((FetchRecord(id=f"r{i}", url="", status="ok"), out.getvalue()))
    cache.put_many(batch)
    load_s = time.perf_counter() - t
    t = time.perf_counter()
    for name in ("prompts", "images"):
        store.build_index(name, info.dim, IndexParams())
    print(f"store: {n_rows:,} prompts, {n_images:,} images with thumbnails, dim {info.dim}")
    print(f"load {load_s:.1f} s, index {time.perf_counter() - t:.1f} s")
    store.close()  # the embedded store: the CLI and the page open it themselves
    return settings, prompts


def cold_cli(data_dir: Path, text: str, k: int) -> tuple[float, list[str]]:
    """Seconds for ``promptlake search`` in a new process, from start to exit, and its ids
    (cold before the page starts; through the page once it runs)."""
    cli = [sys.executable, "-m", "promptlake.cli", "search", text, "-k", str(k), "--json"]
    t = time.perf_counter()
    done = subprocess.run(
        [*cli, "--data-dir", str(data_dir)],
        env={**os.environ, **ENV},
        capture_output=True,
        text=True,
        timeout=600,
    )
    took = time.perf_counter() - t
    if done.returncode != 0 or len(json.loads(done.stdout)) != k:
        raise SystemExit(f"CLI search failed: {done.stderr[-2000:]}")
    return took, [h["id"] for h in json.loads(done.stdout)]


def start_page(data_dir: Path) -> tuple[subprocess.Popen, str, float]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [sys.executable, "-m", "promptlake.cli", "ui", "--data-dir", str(data_dir)]
    t = time.perf_counter()
    proc = subprocess.Popen(
        [*cmd, "--port", str(port)],
        env={**os.environ, **ENV},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    while True:
        if proc.poll() is not None:
            raise SystemExit("promptlake ui exited")
        try:
            if requests.get(url + "/healthz", timeout=5).json()["ready"]:
                return proc, url, time.perf_counter() - t
        except requests.ConnectionError:
            time.sleep(0.1)


def client(url: str, queries: list[str], k: int) -> tuple[list[float], int, list[float]]:
    """One keep-alive client: wall milliseconds per search, how many failed, and the server's
    own ``took_ms`` (the search without HTTP)."""
    lat, failed, took = [], 0, []
    with requests.Session() as http:
        for q in queries:
            t = time.perf_counter()
            r = http.get(url + "/api/search", params={"text": q, "k": k}, timeout=60)
            lat.append((time.perf_counter() - t) * 1000)
            ok = r.status_code == 200 and len(r.json()["hits"]) == k
            failed += not ok
            took += [r.json()["took_ms"]] if ok else []
    return lat, failed, took


def pct(values: list[float], p: float) -> float:
    return float(np.percentile(values, p))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--images", type=int, default=3000)
    ap.add_argument("--queries", type=int, default=200, help="searches per client setting")
    ap.add_argument("-k", type=int, default=24)
    ap.add_argument("--cold-runs", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-ui-") as tmp:
        settings, prompts = build(Path(tmp), args.rows, args.images)
        queries = [f"{p}, variation {i}" for i, p in enumerate(prompts)][: args.queries]
        runs = [cold_cli(settings.data_dir, queries[i], args.k) for i in range(args.cold_runs)]
        proc, url, start_s = start_page(settings.data_dir)
        try:
            via = [cold_cli(settings.data_dir, queries[i], args.k) for i in range(args.cold_runs)]
            same = sum(ids == cold_ids for (_, ids), (_, cold_ids) in zip(via, runs, strict=True))
            client(url, queries[:20], args.k)  # connections, allocator, chDB caches
            one, failed_1, took = client(url, queries, args.k)
            per = [queries[i::8] for i in range(8)]
            t = time.perf_counter()
            with ThreadPoolExecutor(8) as pool:
                results = list(pool.map(lambda qs: client(url, qs, args.k), per))
            wall = time.perf_counter() - t
            eight = [x for lat, _, _ in results for x in lat]
            failed_8 = sum(f for _, f, _ in results)
            thumbs = fetch_thumbnails(url, args.k)
            health = timed_get(url + "/healthz", 100)
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=60)
    cold = [s for s, _ in runs]
    cli = ([s for s, _ in via], same)
    report(args, cold, cli, start_s, (one, took, failed_1), (eight, failed_8, wall), thumbs, health)


def timed_get(url: str, n: int) -> list[float]:
    """Milliseconds per GET of ``url``: the HTTP and framework cost alone, for ``/healthz``."""
    lat = []
    with requests.Session() as http:
        for _ in range(n):
            t = time.perf_counter()
            http.get(url, timeout=60).raise_for_status()
            lat.append((time.perf_counter() - t) * 1000)
    return lat


def fetch_thumbnails(url: str, k: int) -> list[float]:
    """Milliseconds per ``/img/<id>`` for a page's worth of hits, cold then cached by ETag."""
    lat = []
    with requests.Session() as http:
        for i in range(k * 4):
            t = time.perf_counter()
            r = http.get(f"{url}/img/r{i}", timeout=60)
            lat.append((time.perf_counter() - t) * 1000)
            if r.status_code != 200 or r.content[:2] != b"\xff\xd8":
                raise SystemExit(f"/img/r{i} failed: {r.status_code}")
    return lat


def report(args, cold, cli, start_s, single, multi, thumbs, health) -> None:
    (one, took, failed_1), (eight, failed_8, wall) = single, multi
    cold_ms = statistics.median(cold) * 1000
    via_ms = statistics.median(cli[0]) * 1000
    figures = {
        "rows": args.rows,
        "images": args.images,
        "k": args.k,
        "cold_cli_ms": round(cold_ms, 1),
        "cli_via_page_ms": round(via_ms, 1),
        "cold_over_via_page": round(cold_ms / via_ms, 2),
        "via_page_same_hits": f"{cli[1]}/{len(cli[0])}",
        "ui_start_s": round(start_s, 2),
        "warm_p50_ms": round(pct(one, 50), 2),
        "warm_p95_ms": round(pct(one, 95), 2),
        "server_p50_ms": round(pct(took, 50), 2),
        "healthz_p50_ms": round(pct(health, 50), 2),
        "warm8_p50_ms": round(pct(eight, 50), 2),
        "warm8_p95_ms": round(pct(eight, 95), 2),
        "warm8_rps": round(len(eight) / wall, 1),
        "failed": failed_1 + failed_8,
        "img_p50_ms": round(pct(thumbs, 50), 2),
        "cold_over_warm_p50": round(cold_ms / pct(one, 50), 1),
    }
    print(f"cold CLI search (new process, median of {len(cold)}): {cold_ms:,.0f} ms")
    print(f"promptlake ui start (CLIP loaded, store touched): {start_s:.1f} s")
    print(
        f"the same CLI searches with the page running (median of {len(cli[0])}): "
        f"{via_ms:,.0f} ms, {cold_ms / via_ms:.1f}x faster; same hits in {cli[1]} of "
        f"{len(cli[0])}"
    )
    print(f"warm, 1 client:   p50 {figures['warm_p50_ms']} ms  p95 {figures['warm_p95_ms']} ms")
    print(
        f"  of which the search itself (server's took_ms) p50 {figures['server_p50_ms']} ms; "
        f"an HTTP round trip alone (/healthz) p50 {figures['healthz_p50_ms']} ms"
    )
    print(
        f"warm, 8 clients:  p50 {figures['warm8_p50_ms']} ms  p95 {figures['warm8_p95_ms']} ms  "
        f"{figures['warm8_rps']} searches/s"
    )
    print(f"failed requests: {figures['failed']} of {len(one) + len(eight)}")
    print(f"/img/<id>: p50 {figures['img_p50_ms']} ms")
    print(f"cold CLI / warm page p50: {figures['cold_over_warm_p50']}x")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
