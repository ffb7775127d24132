"""Search benchmark: load, index build, query latency and recall@10 on clustered vectors.

Synthetic 512-d unit vectors drawn around 1,000 cluster centres (uniform random vectors are a
misleading worst case for HNSW), generated and loaded in chunks so memory stays bounded. Exact
search in numpy over the same chunks is the baseline and the ground truth for recall.

    make bench-search                      # 100k rows
    python benchmarks/search.py --n 900000
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from promptlake.storage.dialects import IndexParams  # noqa: E402
from promptlake.storage.store import Filters, open_store  # noqa: E402
from promptlake.storage.vectors import list_column  # noqa: E402

DIM, CHUNK, SITES = 512, 50_000, ("lexica", "civitai", "krea", "midjourney")


def chunk(i: int, n: int, centres: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(1000 + i)
    # unit centres plus noise of norm ~0.6: cosine ~0.85 to the centre, like CLIP neighbourhoods
    v = centres[rng.integers(0, len(centres), n)] + 0.6 * rng.normal(size=(n, DIM)) / DIM**0.5
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def rows(i: int, vecs: np.ndarray) -> pa.Table:
    n, base = len(vecs), i * CHUNK
    ids = [f"r{base + j}" for j in range(n)]
    return pa.table(
        {
            "id": ids,
            "prompt": ids,
            "url": ids,
            "width": pa.array([512] * n, pa.uint32()),
            "height": pa.array([512] * n, pa.uint32()),
            "source_site": [SITES[(base + j) % 4] for j in range(n)],
            "shard": [f"{i:05d}"] * n,
            "model": ["bench"] * n,
            "prompt_vector": list_column(vecs),
        }
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--store", help="store URL (default: a temporary chDB)")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(1000, DIM))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    queries = chunk(999, args.queries, centres)
    n_chunks = -(-args.n // CHUNK)
    with tempfile.TemporaryDirectory(prefix="bench-search-") as tmp:
        store = open_store(args.store or f"chdb://{tmp}/store")
        store.ensure_schema("bench", DIM)
        load_s, exact_s = 0.0, 0.0
        best = [np.full((args.queries, 0), -2.0), np.zeros((args.queries, 0), np.int64)]
        best_f = [np.full((args.queries, 0), -2.0), np.zeros((args.queries, 0), np.int64)]
        for i in range(n_chunks):
            vecs = chunk(i, min(CHUNK, args.n - i * CHUNK), centres)
            t = time.perf_counter()
            store.load_shard("prompts", f"{i:05d}", rows(i, vecs))
            load_s += time.perf_counter() - t
            t = time.perf_counter()
            sims = queries @ vecs.T  # exact search, streamed chunk by chunk
            best = _merge(best, sims, i * CHUNK)
            mask = np.array([(i * CHUNK + j) % 4 == 1 for j in range(len(vecs))])
            best_f = _merge(best_f, np.where(mask, sims, -2.0), i * CHUNK)
            exact_s += time.perf_counter() - t
        t = time.perf_counter()
        store.build_index("prompts", DIM, IndexParams())
        index_s = time.perf_counter() - t
        print(f"{args.n:,} rows of {DIM}-d clustered unit vectors, {args.queries} queries")
        print(f"load: {args.n / load_s:,.0f} rows/s; index build {index_s:.1f} s")
        for label, truth, filt in (
            ("no filter", best, None),
            ("source_site filter", best_f, Filters(source_site="civitai")),
        ):
            lat, recall = [], []
            for q, want in zip(queries, truth[1], strict=True):
                t = time.perf_counter()
                hits = store.search("prompts", q.tolist(), 10, filt)
                lat.append((time.perf_counter() - t) * 1000)
                got = {int(h.id[1:]) for h in hits}
                recall.append(len(got & set(want[:10].tolist())) / 10)
            print(
                f"{label:19} p50 {np.percentile(lat, 50):6.1f} ms  p95 "
                f"{np.percentile(lat, 95):6.1f} ms  recall@10 {np.mean(recall):.3f}"
            )
        print(
            f"numpy exact (baseline, the {args.queries} queries batched in one matmul per "
            f"chunk): {exact_s / args.queries * 1000 / 2:.2f} ms per query"
        )
        print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


def _merge(best, sims, offset):
    """Keep the 10 best (similarity, row) per query across chunks."""
    top = np.argpartition(-sims, 9, axis=1)[:, :10]
    vals = np.take_along_axis(sims, top, axis=1)
    allv = np.concatenate([best[0], vals], axis=1)
    alli = np.concatenate([best[1], top + offset], axis=1)
    order = np.argsort(-allv, axis=1)[:, :10]
    return [np.take_along_axis(allv, order, axis=1), np.take_along_axis(alli, order, axis=1)]


if __name__ == "__main__":
    main()
