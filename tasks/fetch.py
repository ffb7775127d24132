"""fetch: download each shard's images into the LMDB cache, one status per row."""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

import pyarrow as pa
import pyarrow.parquet as pq
from prefect import task
from tqdm.auto import tqdm

from promptlake.settings import Settings
from storage.image_cache import ImageCache
from storage.layout import DataDir, atomic_path
from storage.markers import Markers
from storage.records import FetchRecord, ShardStats
from tasks.fetcher import Fetcher
from tasks.imaging import ImageProblem, process_image
from tasks.plan import read_shard

STAGE = "fetch"
# Failures that another try cannot change: --retry-failed leaves them alone.
PERMANENT = frozenset({"invalid_url"})
STATUS_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("url", pa.string()),
        ("status", pa.string()),
        ("http_status", pa.int32()),
        ("error", pa.string()),
        ("bytes", pa.int64()),
        ("orig_width", pa.int32()),
        ("orig_height", pa.int32()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("sha256", pa.string()),
        ("attempts", pa.int32()),
        ("elapsed_ms", pa.float64()),
    ]
)


def fetch_one(
    fetcher: Fetcher, rid: str, url: str, s: Settings
) -> tuple[FetchRecord, bytes | None]:
    """Download, verify and re-encode one image; every outcome is a record, never an exception."""
    start = time.perf_counter()
    got = fetcher.get(url)
    rec = FetchRecord(
        rid, url, got.status, got.http_status, got.error, len(got.body), attempts=got.attempts
    )
    image = None
    if got.status == "ok":
        rec.sha256 = hashlib.sha256(got.body).hexdigest()
        try:
            img = process_image(
                got.body,
                size=s.image_size,
                fmt=s.image_format,
                quality=s.image_quality,
                max_pixels=s.max_image_pixels,
            )
            image = img.data
            rec.orig_width, rec.orig_height = img.orig_width, img.orig_height
            rec.width, rec.height = img.width, img.height
        except ImageProblem as exc:
            rec.status, rec.error = exc.status, str(exc)[:300]
    rec.elapsed_ms = round((time.perf_counter() - start) * 1000, 2)
    return rec, image


def _bounded_map(pool: ThreadPoolExecutor, fn, items: Iterable, window: int) -> Iterator:
    """Like ``pool.map`` but unordered and with at most ``window`` items in flight."""
    pending: set[Future] = set()
    for item in items:
        pending.add(pool.submit(fn, *item))
        if len(pending) >= window:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            yield from (f.result() for f in done)
    for f in pending:
        yield f.result()


def run_shard(
    shard: str,
    data: DataDir,
    settings: Settings,
    *,
    retry_failed: bool = False,
    force: bool = False,
    progress: bool = False,
) -> ShardStats:
    """Fetch one shard. Safe to run twice: a marked shard is skipped (or only its failed rows
    are retried with ``retry_failed``); rows already in the cache are never fetched again."""
    markers = Markers(data, STAGE)
    if markers.done(shard) and not (force or retry_failed):
        return markers.read(shard)
    start = time.perf_counter()
    rows = read_shard(data, shard).select(["id", "url"]).to_pylist()
    cache = ImageCache.open(data.image_cache, settings.lmdb_map_size)
    known = {} if force else cache.records(r["id"] for r in rows)
    todo = [
        (r["id"], r["url"])
        for r in rows
        if r["id"] not in known or (retry_failed and _retryable(known[r["id"]]))
    ]
    fetcher = Fetcher(settings)
    bar = tqdm(
        total=len(todo), desc=f"fetch {shard}", unit="img", leave=False, disable=not progress
    )
    try:
        with ThreadPoolExecutor(settings.fetch_workers, thread_name_prefix="fetch") as pool:
            work = ((fetcher, rid, url, settings) for rid, url in todo)
            for rec, image in _bounded_map(pool, fetch_one, work, 2 * settings.fetch_workers):
                cache.put(rec, image)  # one commit per image: a kill loses nothing fetched
                bar.update()
    finally:
        bar.close()
        fetcher.close()
    stats = _finish(shard, rows, data, cache, markers)
    stats.skipped = len(rows) - len(todo)
    stats.seconds = round(time.perf_counter() - start, 3)
    stats.extra["fetched"] = len(todo)
    markers.write(stats)
    return stats


def _retryable(rec: FetchRecord) -> bool:
    return not rec.ok and rec.status not in PERMANENT


def _finish(
    shard: str, rows: list[dict], data: DataDir, cache: ImageCache, markers: Markers
) -> ShardStats:
    """Write the shard's status file from the cache, in shard order, then sync the cache."""
    records = cache.records(r["id"] for r in rows)
    missing = [r["id"] for r in rows if r["id"] not in records]
    if missing:
        raise RuntimeError(f"fetch {shard}: {len(missing)} rows have no record, e.g. {missing[0]}")
    ordered = [records[r["id"]].to_dict() for r in rows]
    with atomic_path(data.fetch_status(shard)) as tmp:
        pq.write_table(pa.Table.from_pylist(ordered, schema=STATUS_SCHEMA), tmp)
    cache.sync()
    counts = Counter(r["status"] for r in ordered)
    ok = counts.get("ok", 0)
    return ShardStats(
        STAGE,
        shard,
        rows=len(rows),
        ok=ok,
        failed=len(rows) - ok,
        by_status=dict(counts),
        extra={"bytes": sum(r["bytes"] for r in ordered)},
    )


def read_status(data: DataDir, shard: str) -> pa.Table:
    """The per-row fetch status of a finished shard."""
    return pq.read_table(data.fetch_status(shard), schema=STATUS_SCHEMA)


@task(name=STAGE)
def fetch_task(
    shard: str,
    data_dir: str,
    settings: Settings,
    *,
    retry_failed: bool = False,
    force: bool = False,
    progress: bool = False,
) -> ShardStats:
    """Prefect task: fetch one shard; a raised error is recorded beside the shard's marker."""
    markers = Markers(DataDir(data_dir), STAGE)
    try:
        return run_shard(
            shard,
            DataDir(data_dir),
            settings,
            retry_failed=retry_failed,
            force=force,
            progress=progress,
        )
    except Exception as exc:
        markers.record_failure(shard, exc)
        raise
