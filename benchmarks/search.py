"""Search benchmark: load, index build against the engine's own, query latency and recall@10.

Synthetic 512-d unit vectors drawn around 1,000 cluster centres (uniform random vectors are a
misleading worst case for HNSW), generated and loaded in chunks so memory stays bounded. Each
row's metadata is drawn so that every filter kind has a broad and a selective value: four sites
of ~25% and one of 1%, 1% of rows from feedback, width and height each >= 1024 for 25% and
>= 2048 for 1%, none of it tied to the vectors. Exact search in numpy over the same chunks is
the ground truth for recall.

Two tables get the same rows, chunk by chunk as shards are loaded: promptlake's, and one made as
before this change (sorted by (source_site, origin, id), default granules) in database
``before``. Index build: before promptlake's index stage (``Store.build_index``: the first build
merges the table into one part, then indexes it) the table is copied part for part (ATTACH
PARTITION … FROM, no merges: the very same parts), and the engine alone builds the same index
on the copy with a plain ALTER TABLE … ADD INDEX / MATERIALIZE INDEX; another copy is merged by
a plain OPTIMIZE … FINAL. The table made as before is indexed as it was then (plain, on its
parts).

Queries: every filter through ``Store.search`` and through the code before this change on the
table made as before (the HNSW index post-filtering 8x its candidates, a short answer redone
exactly), query by query in turns, so both see the same load on a shared machine.

    make bench-search                      # 100k rows
    python benchmarks/search.py --n 900000

Prints its figures and ends with one JSON line carrying all of them.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from promptlake.storage.datadir.vectors import list_column  # noqa: E402
from promptlake.storage.store import TABLES, Filters, Store, open_store  # noqa: E402
from promptlake.storage.store.dialects import IndexParams  # noqa: E402

DIM, CHUNK = 512, 50_000
SITES, SITE_SHARE = ("lexica", "civitai", "krea", "midjourney", "nightcafe"), (25, 25, 25, 24, 1)
SIZES, SIZE_SHARE = (512, 768, 1024, 2048), (50, 25, 24, 1)
Meta = dict[str, np.ndarray]
# label, filter, the rows it keeps (for the numpy ground truth)
FILTERS: tuple[tuple[str, Filters, Callable[[Meta], np.ndarray]], ...] = (
    ("no filter", Filters(), lambda m: np.ones(len(m["width"]), bool)),
    ("source_site 25%", Filters(source_site="civitai"), lambda m: m["source_site"] == "civitai"),
    ("source_site 1%", Filters(source_site="nightcafe"), lambda m: m["source_site"] == "nightcafe"),
    ("origin 1%", Filters(origin="feedback"), lambda m: m["origin"] == "feedback"),
    ("origin 99%", Filters(origin="dataset"), lambda m: m["origin"] == "dataset"),
    ("min_width 25%", Filters(min_width=1024), lambda m: m["width"] >= 1024),
    ("min_width 1%", Filters(min_width=2048), lambda m: m["width"] >= 2048),
    ("min_height 25%", Filters(min_height=1024), lambda m: m["height"] >= 1024),
    ("min_height 1%", Filters(min_height=2048), lambda m: m["height"] >= 2048),
    (
        "site 25% + width 25%",
        Filters(source_site="civitai", min_width=1024),
        lambda m: (m["source_site"] == "civitai") & (m["width"] >= 1024),
    ),
)


def chunk(i: int, n: int, centres: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(1000 + i)
    # unit centres plus noise of norm ~0.6: cosine ~0.85 to the centre, like CLIP neighbourhoods
    v = centres[rng.integers(0, len(centres), n)] + 0.6 * rng.normal(size=(n, DIM)) / DIM**0.5
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def meta(i: int, n: int) -> Meta:
    """Chunk ``i``'s metadata, drawn independently of its vectors."""
    rng = np.random.default_rng(2000 + i)

    def draw(values: tuple, shares: tuple) -> np.ndarray:
        return np.array(values)[rng.choice(len(values), n, p=np.array(shares) / 100)]

    return {
        "source_site": draw(SITES, SITE_SHARE),
        "origin": np.where(rng.random(n) < 0.01, "feedback", "dataset"),
        "width": draw(SIZES, SIZE_SHARE).astype(np.uint32),
        "height": draw(SIZES, SIZE_SHARE).astype(np.uint32),
    }


def rows(i: int, vecs: np.ndarray) -> pa.Table:
    n, base = len(vecs), i * CHUNK
    ids = [f"r{base + j}" for j in range(n)]
    m = meta(i, n)
    return pa.table(
        {
            "id": ids,
            "prompt": ids,
            "url": ids,
            "width": pa.array(m["width"]),
            "height": pa.array(m["height"]),
            "source_site": m["source_site"],
            "origin": m["origin"],
            "shard": [f"{i:05d}"] * n,
            "model": ["bench"] * n,
            "prompt_vector": list_column(vecs),
        }
    )


def old_search(before: Store, vector: list[float], k: int, filters: Filters) -> list:
    """The strategy before this change, through the same query code on the table as it was
    made before: the HNSW index post-filters 8x its candidates, a short answer is redone
    exactly."""
    post = {
        "vector_search_filter_strategy": "postfilter",
        "vector_search_index_fetch_multiplier": 8,
    }
    hits = before._knn("prompts", vector, k, filters, post if filters.active else {})
    if filters.active and len(hits) < k:
        hits = before._knn("prompts", vector, k, filters, {"use_skip_indexes": 0})
    return hits


def before_store(store: Store) -> Store:
    """A store in database ``before`` on the same engine whose prompts table is made as before
    this change: sorted by (source_site, origin, id), granules of the default size."""
    before = Store(store.url, store.dialect, "before", client=store._client, turn=store._turn)
    with store.turn("bench before"):
        ddl = store.client.query(f"SHOW CREATE TABLE {store.table('prompts')}").result_rows[0][0]
        old = (
            ddl.replace(store.table("prompts"), before.table("prompts"))
            .replace("(source_site, origin, width, height, id)", "(source_site, origin, id)")
            .replace("index_granularity = 1024", "index_granularity = 8192")
        )
        assert old.count("index_granularity = 8192") == 1 and "width, height, id" not in old
        store.client.command("CREATE DATABASE IF NOT EXISTS before")
        store.client.command(old)
    return before


def load(stores: list[Store], n: int, queries: np.ndarray, centres: np.ndarray) -> dict:
    """Load ``n`` rows in chunks into each store; rows/s of each, numpy's exact search time
    per query (unfiltered) and each filter's exact top 10 per query."""
    load_s, exact_s = [0.0] * len(stores), 0.0
    best = [(np.full((len(queries), 0), -2.0), np.zeros((len(queries), 0), np.int64))] * len(
        FILTERS
    )
    for i in range(-(-n // CHUNK)):
        vecs = chunk(i, min(CHUNK, n - i * CHUNK), centres)
        table = rows(i, vecs)
        for j in range(len(stores))[:: 1 if i % 2 else -1]:  # in turns: neither goes first
            t = time.perf_counter()
            stores[j].load_shard("prompts", f"{i:05d}", table)
            load_s[j] += time.perf_counter() - t
        t = time.perf_counter()
        sims = queries @ vecs.T  # exact search, streamed chunk by chunk
        best[0] = _merge(best[0], sims, i * CHUNK)
        exact_s += time.perf_counter() - t
        m = meta(i, len(vecs))
        for f, (_, _, keep) in enumerate(FILTERS[1:], 1):
            best[f] = _merge(best[f], np.where(keep(m), sims, -2.0), i * CHUNK)
    return {
        "load_rows_s": [round(n / s) for s in load_s],
        "numpy_exact_ms": round(exact_s / len(queries) * 1000, 2),
        "truth": [b[1] for b in best],
    }


def timed(store: Store, sqls: list[str]) -> float:
    t = time.perf_counter()
    for sql in sqls:
        store.client.command(sql)
    return time.perf_counter() - t


def index_builds(store: Store, before: Store, params: IndexParams) -> dict:
    """Promptlake's index stage against the engine alone: a plain ADD INDEX / MATERIALIZE
    INDEX of the same index on a part-for-part copy (merges held, so on the very same parts),
    and the engine's merge of another copy into one part (the first build's OPTIMIZE); the
    table made as before this change is indexed as it was then (plain, on its parts)."""
    table, column = store.table("prompts"), TABLES["prompts"]
    copy, merged = store.table("engine_copy"), store.table("engine_merged")
    with store.turn("bench index", long=True):
        c = store.client
        for name in (copy, merged):
            c.command(f"CREATE TABLE {name} AS {table}")
        c.command(  # no background merge on the copy: its index is built on the same parts
            f"ALTER TABLE {copy} MODIFY SETTING max_bytes_to_merge_at_max_space_in_pool = 1, "
            "max_bytes_to_merge_at_min_space_in_pool = 1"
        )
        for name in (copy, merged):
            c.command(f"ALTER TABLE {name} ATTACH PARTITION tuple() FROM {table}")
        parts = _parts(store, copy)
        engine_s = timed(store, store.dialect.add_index(copy, column, DIM, params))
        assert _parts(store, copy) == parts, "the copy's parts were merged during its build"
        merge_s = timed(store, [f"OPTIMIZE TABLE {merged} FINAL"])
        t = time.perf_counter()
        store.build_index("prompts", DIM, params)
        promptlake_s = time.perf_counter() - t
        old_ddl = store.dialect.add_index(before.table("prompts"), column, DIM, params)
        before_s = timed(store, old_ddl)
        for name in (copy, merged):
            c.command(f"DROP TABLE {name} SYNC")
    return {
        "parts": int(parts),
        "index_s": round(promptlake_s, 1),
        "engine_index_s": round(engine_s, 1),
        "engine_merge_s": round(merge_s, 1),
        "index_vs_engine": round(promptlake_s / engine_s, 3),
        "index_vs_engine_merge_and_index": round(promptlake_s / (engine_s + merge_s), 3),
        "before_index_s": round(before_s, 1),
    }


def _parts(store: Store, table: str) -> int:
    return int(store.client.query(f"SELECT uniqExact(_part) FROM {table}").result_rows[0][0])


def queries_run(store: Store, before: Store, queries: np.ndarray, truth: list) -> dict:
    """p50/p95 and recall@10 per filter, now and before, query by query in turns."""
    out = {}
    runs = {
        "now": lambda v, f: store.search("prompts", v, 10, f),
        "before": lambda v, f: old_search(before, v, 10, f),
    }
    with store.turn("bench queries"):
        for (label, filters, _), want in zip(FILTERS, truth, strict=True):
            lat: dict[str, list[float]] = {name: [] for name in runs}
            rec: dict[str, list[float]] = {name: [] for name in runs}
            for n, (q, top) in enumerate(zip(queries, want, strict=True)):
                for name in list(runs)[:: 1 if n % 2 else -1]:
                    t = time.perf_counter()
                    hits = runs[name](q.tolist(), filters)
                    lat[name].append((time.perf_counter() - t) * 1000)
                    rec[name].append(len({int(h.id[1:]) for h in hits} & set(top.tolist())) / 10)
            out[label] = {
                name: {
                    "p50_ms": round(float(np.percentile(lat[name], 50)), 1),
                    "p95_ms": round(float(np.percentile(lat[name], 95)), 1),
                    "recall10": round(float(np.mean(rec[name])), 3),
                }
                for name in runs
            }
            ratio = out[label]["before"]["p50_ms"] / out[label]["now"]["p50_ms"]
            out[label]["speedup_p50"] = round(ratio, 2)
            _print_row(label, out[label])
    return out


def _print_row(label: str, r: dict) -> None:
    now, old = r["now"], r["before"]
    print(
        f"{label:21} p50 {now['p50_ms']:6.1f} ms  p95 {now['p95_ms']:6.1f} ms  recall@10 "
        f"{now['recall10']:.3f} | before: p50 {old['p50_ms']:6.1f} ms  p95 {old['p95_ms']:6.1f} "
        f"ms  recall@10 {old['recall10']:.3f} | {r['speedup_p50']:.2f}x"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=100)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(1000, DIM))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    queries = chunk(999, args.queries, centres)
    with tempfile.TemporaryDirectory(prefix="bench-search-") as tmp:
        store = open_store(f"chdb://{tmp}/store")
        store.ensure_schema("bench", DIM)
        before = before_store(store)
        loaded = load([store, before], args.n, queries, centres)
        print(f"{args.n:,} rows of {DIM}-d clustered unit vectors, {args.queries} queries")
        built = index_builds(store, before, IndexParams())
        print(
            f"load {loaded['load_rows_s'][0]:,} rows/s (before: {loaded['load_rows_s'][1]:,})\n"
            f"index build {built['index_s']:.1f} s; the engine alone on the same "
            f"{built['parts']} parts {built['engine_index_s']:.1f} s "
            f"({built['index_vs_engine']:.2f}x), its merge into one part "
            f"{built['engine_merge_s']:.1f} s (with it: "
            f"{built['index_vs_engine_merge_and_index']:.2f}x); before: "
            f"{built['before_index_s']:.1f} s"
        )
        print(f"{'':21} Store.search now{'':37}| before this change")
        results = queries_run(store, before, queries, loaded["truth"])
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"numpy exact, unfiltered, batched: {loaded['numpy_exact_ms']:.2f} ms per query")
        print(f"peak RSS {rss:.0f} MiB")
        figures = {"n": args.n, "queries": args.queries, "load_rows_s": loaded["load_rows_s"][0]}
        figures["before_load_rows_s"] = loaded["load_rows_s"][1]
        figures["numpy_exact_ms"] = loaded["numpy_exact_ms"]
        print(json.dumps({**figures, **built, "peak_rss_mib": round(rss), "search": results}))
        store.close()  # the engine lets go of the folder before it goes


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
