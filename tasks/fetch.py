"""fetch: download each shard's images into the LMDB cache, one status per row."""

from __future__ import annotations

import hashlib
import heapq
import queue
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from prefect import task
from tqdm.auto import tqdm

from promptlake.settings import Settings
from promptlake.storage.datadir import diskspace
from promptlake.storage.datadir.image_cache import ImageCache
from promptlake.storage.datadir.layout import DataDir, atomic_path, remove
from promptlake.storage.datadir.markers import Markers
from promptlake.storage.datadir.planfiles import read_retired
from promptlake.storage.datadir.records import FETCH_FIXES, PERMANENT_FETCH, FetchRecord, ShardStats
from promptlake.tasks.images.cached import damaged
from promptlake.tasks.images.imaging import ImageProblem, process_image
from promptlake.tasks.net.fetcher import Fetcher
from promptlake.tasks.net.hosts import host_key, reset
from promptlake.tasks.plan import read_shard
from promptlake.tasks.runtime import stop
from promptlake.tasks.runtime.disk import check_space, not_retried

STAGE = "fetch"
RESET_ON_RETRY = frozenset({"host_down", "dns_error"})  # statuses whose hosts a retry trusts again
STOP_POLL = 0.5  # seconds between looks at a stop request while rows are in flight
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


@dataclass(order=True)
class Job:
    """One row to fetch; ordered by when it may run (retries wait without holding a worker)."""

    ready: float
    rid: str = field(compare=False)
    url: str = field(compare=False)
    attempt: int = field(default=1, compare=False)
    started: float = field(default=0.0, compare=False)


def fetch_one(fetcher: Fetcher, job: Job, s: Settings) -> tuple[FetchRecord, bytes | None] | Job:
    """One try at a row: a final record, or the job of its next try. A body that does not decode
    is the row's status; any other exception is a bug and propagates (the shard fails)."""
    started = job.started or time.perf_counter()
    got = fetcher.attempt(job.url, job.attempt)
    if got.retry_in is not None and job.attempt <= s.fetch_retries:
        return Job(time.monotonic() + got.retry_in, job.rid, job.url, job.attempt + 1, started)
    rec = FetchRecord(
        job.rid,
        job.url,
        got.status,
        got.http_status,
        got.error,
        len(got.body),
        attempts=got.attempts,
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
                resample=s.resize_filter,
            )
            image = img.data
            rec.image_sha256 = hashlib.sha256(image).hexdigest()
            rec.orig_width, rec.orig_height = img.orig_width, img.orig_height
            rec.width, rec.height = img.width, img.height
        except ImageProblem as exc:
            rec.status, rec.error = exc.status, str(exc)[:300]
    rec.elapsed_ms = round((time.perf_counter() - started) * 1000, 2)
    return rec, image


def run_jobs(
    pool: ThreadPoolExecutor, fn: Callable[[Job], Any], jobs: list[Job], window: int
) -> Iterator[list[Any]]:
    """Yield ``fn(job)`` results in batches (whatever finished meanwhile), at most ``window``
    jobs in flight or yielded but not yet handled. A result that is a ``Job`` is queued again
    and runs once its ``ready`` time has come. Due retries go before fresh rows. A stop request
    (Ctrl-C with shards in threads) ends it between batches: :class:`stop.Stopped`."""
    finished: queue.SimpleQueue[Future] = queue.SimpleQueue()
    fresh, busy = deque(jobs), 0
    later: list[Job] = []
    while fresh or later or busy:
        stop.check()
        now = time.monotonic()
        while busy < window and (fresh or (later and later[0].ready <= now)):
            due = later and later[0].ready <= now
            job = heapq.heappop(later) if due else fresh.popleft()
            pool.submit(fn, job).add_done_callback(finished.put)
            busy += 1
        wait_for = max(0.0, later[0].ready - now) if later and busy < window else STOP_POLL
        try:
            futures = [finished.get(timeout=min(wait_for, STOP_POLL))]
        except queue.Empty:
            continue
        while not finished.empty():
            futures.append(finished.get())
        busy -= len(futures)
        batch = []
        for fut in futures:
            out = fut.result()  # a worker's exception is the shard's
            if isinstance(out, Job):
                heapq.heappush(later, out)
            else:
                batch.append(out)
        if batch:
            yield batch


def run_shard(
    shard: str,
    data: DataDir,
    settings: Settings,
    *,
    retry_failed: bool = False,
    force: bool = False,
    progress: bool = False,
) -> ShardStats:
    """Fetch one shard. Safe to run twice: a marked shard is skipped (or only its failed rows,
    and rows whose cached image is damaged, are retried with ``retry_failed``); rows already in
    the cache are never fetched again. A marker whose status file is damaged is not trusted:
    the file is made again from the cache."""
    markers = Markers(data, STAGE)
    finished = markers.valid(shard)
    if finished is not None and not (force or retry_failed):
        return finished
    start = time.perf_counter()
    rows = live_rows(data, shard)
    cache = ImageCache.open(data.image_cache, settings.lmdb_map_size)
    known = {} if force else cache.records(r["id"] for r in rows)
    broken = damaged(cache, known) if retry_failed else set()
    todo = [
        Job(0.0, r["id"], r["url"])
        for r in rows
        if r["id"] in broken or _wanted(known.get(r["id"]), r, retry_failed)
    ]
    if finished is not None:
        if not todo:  # nothing to fetch again: the shard and the stages after it stay as they are
            return finished
        redo_later_stages(data, shard)  # the rows it fetches again change what embed and load see
    need = len(todo) * diskspace.IMAGE_BYTES + len(rows) * diskspace.STATUS_BYTES
    check_space(data, settings, need=need, what=f"fetch shard {shard}")
    if retry_failed:  # a deliberate retry gives hosts marked down a fresh start
        reset(host_key(rec.url) for rec in known.values() if rec.status in RESET_ON_RETRY)
    fetcher = Fetcher(settings)
    bar = tqdm(
        total=len(todo), desc=f"fetch {shard}", unit="img", leave=False, disable=not progress
    )
    pool = ThreadPoolExecutor(settings.fetch_workers, thread_name_prefix="fetch")
    try:
        one = partial(fetch_one, fetcher, s=settings)
        for batch in run_jobs(pool, one, todo, 2 * settings.fetch_workers):
            # one commit per batch of finished rows, before more rows start: a kill loses at
            # most the window (fetched or in flight), which a rerun fetches again
            cache.put_many(batch)
            bar.update(len(batch))
    finally:  # stopping, rows still in flight are left to end on their own: nobody waits
        pool.shutdown(wait=not stop.requested(), cancel_futures=True)
        bar.close()
        fetcher.close()
    stats = _finish(shard, rows, data, cache, markers)
    cache.release()  # the records and pages this shard read: flat memory, shard after shard
    stats.skipped = len(rows) - len(todo)
    stats.seconds = round(time.perf_counter() - start, 3)
    stats.extra["fetched"] = len(todo)
    markers.write(stats, outputs=[data.fetch_status(shard)], inputs=[data.shard_file(shard)])
    return stats


def live_rows(data: DataDir, shard: str) -> list[dict]:
    """The shard's rows that no later plan retired (id and URL): the only ones fetched, so a
    changed row's old URL never replaces its live image in the cache, and a removed row is
    never requested again."""
    rows = read_shard(data, shard).select(["id", "url"])
    retired = read_retired(data, shard)["id"].combine_chunks()
    if len(retired):
        rows = rows.filter(pc.invert(pc.is_in(rows["id"], value_set=retired)))
    return rows.to_pylist()


def redo_later_stages(data: DataDir, shard: str) -> None:
    """Before fetching rows of a finished shard again: remove its load and embed markers, then
    its own, so that whatever dies when, the rerun fetches what is missing, writes the status
    anew, and embeds and loads the shard again with it."""
    later = [Markers(data, "load").path(shard)]
    later += sorted(data.state_dir("embed").glob(f"*/{shard}.json"))
    for path in [*later, Markers(data, STAGE).path(shard)]:
        remove(path)


def _wanted(rec: FetchRecord | None, row: dict, retry_failed: bool) -> bool:
    """Whether a row needs a fetch: nothing cached for it, a cached record of another URL (the
    source changed the row's image), or a failure worth retrying when asked to."""
    if rec is None or rec.url != row["url"]:
        return True
    return retry_failed and _retryable(rec)


def _retryable(rec: FetchRecord) -> bool:
    return not rec.ok and rec.status not in PERMANENT_FETCH


def shard_warning(by_status: dict[str, int]) -> str | None:
    """A loud line for a shard where no row was fetched, naming the main reason and its fix
    (the run report and ``promptlake status`` print it), or None."""
    rows = sum(by_status.values())
    if not rows or by_status.get("ok"):
        return None
    reason, n = max(by_status.items(), key=lambda kv: kv[1])
    fix = FETCH_FIXES.get(reason, f"see the error column of the {reason} rows")
    share = "every row" if n == rows else f"{n} of {rows} rows"
    return f"no image fetched: {share} failed with {reason} — {fix}"


def _finish(
    shard: str, rows: list[dict], data: DataDir, cache: ImageCache, markers: Markers
) -> ShardStats:
    """Write the shard's status file from the cache, in shard order, then sync the cache."""
    records = cache.records(r["id"] for r in rows)
    missing = [r["id"] for r in rows if getattr(records.get(r["id"]), "url", None) != r["url"]]
    if missing:
        raise RuntimeError(
            f"fetch {shard}: {len(missing)} rows have no record of their URL, e.g. {missing[0]}"
        )
    ordered = [records[r["id"]].to_dict() for r in rows]
    with atomic_path(data.fetch_status(shard)) as tmp:
        pq.write_table(pa.Table.from_pylist(ordered, schema=STATUS_SCHEMA), tmp)
    cache.sync()
    counts = Counter(r["status"] for r in ordered)
    ok = counts.get("ok", 0)
    extra: dict[str, Any] = {"bytes": sum(r["bytes"] for r in ordered)}
    down = Counter(host_key(r["url"]) for r in ordered if r["status"] == "host_down")
    if down:
        extra["hosts_down"] = dict(down.most_common())
    if warning := shard_warning(counts):
        extra["warning"] = warning
    return ShardStats(
        STAGE,
        shard,
        rows=len(rows),
        ok=ok,
        failed=len(rows) - ok,
        by_status=dict(counts),
        extra=extra,
    )


def read_status(data: DataDir, shard: str) -> pa.Table:
    """The per-row fetch status of a finished shard."""
    return pq.read_table(data.fetch_status(shard), schema=STATUS_SCHEMA)


@task(name=STAGE, retry_condition_fn=not_retried())
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
    with Markers(DataDir(data_dir), STAGE).recording(shard):
        return run_shard(
            shard,
            DataDir(data_dir),
            settings,
            retry_failed=retry_failed,
            force=force,
            progress=progress,
        )
