"""load: put each embedded shard's prompts and images, with their vectors, into the store."""

from __future__ import annotations

import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
from prefect import task

from promptlake.settings import Settings, store_url
from promptlake.storage.datadir.image_cache import ImageCache
from promptlake.storage.datadir.layout import DataDir, read_json, write_json
from promptlake.storage.datadir.markers import Markers
from promptlake.storage.datadir.planfiles import (
    GENERATION_COLUMNS,
    committed,
    read_index,
    read_retired,
)
from promptlake.storage.datadir.records import ShardStats
from promptlake.storage.datadir.vectors import ModelMismatch, list_column, read_vectors
from promptlake.storage.store.urls import parse_store_url, redact_url
from promptlake.tasks.clip.encoder import current_namespace
from promptlake.tasks.embed import embed_markers
from promptlake.tasks.fetch import read_status
from promptlake.tasks.plan import read_shard
from promptlake.tasks.runtime.disk import not_retried
from promptlake.tasks.runtime.turn import store_turn

STAGE = "load"


def run_shard(shard: str, data: DataDir, settings: Settings, *, force: bool = False) -> ShardStats:
    """Replace the shard's rows in the store (delete, then insert): loading twice adds nothing."""
    markers = Markers(data, STAGE)
    finished = markers.valid(shard)
    if finished is not None and not force:
        return finished
    ns, model = current_namespace(data, settings)
    if not embed_markers(data, ns).done(shard):
        raise RuntimeError(f"load {shard}: not embedded with {ns} yet; run embed first")
    start = time.perf_counter()
    prompts = _prompt_rows(data, shard, ns)  # read before the turn: hold the store briefly
    retired = read_retired(data, shard)["id"].combine_chunks()
    if len(retired):  # rows a later plan changed or removed: their current copies live elsewhere
        prompts = prompts.filter(pc.invert(pc.is_in(prompts["id"], value_set=retired)))
    images = _image_rows(data, shard, ns, prompts)
    with store_turn(settings, f"load shard {shard}") as store:
        store.ensure_schema(ns, int(model["dim"]))
        store.load_shard("prompts", shard, prompts)
        store.load_shard("images", shard, images)
    stats = ShardStats(
        STAGE,
        shard,
        rows=prompts.num_rows,
        ok=prompts.num_rows,
        by_status={"prompts": prompts.num_rows, "images": images.num_rows},
        seconds=round(time.perf_counter() - start, 3),
        extra={"namespace": ns, "store": _store_note(data, settings)},
    )
    inputs = [data.vectors(ns, kind, shard) for kind in ("text", "image")]
    markers.write(stats, inputs=[data.shard_file(shard), data.fetch_status(shard), *inputs])
    return stats


def _store_note(data: DataDir, settings: Settings) -> str:
    """Which store the shard went to, for its marker: an embedded store inside the data dir by
    its place there (the data dir may move), any other by its URL without a password."""
    url = store_url(settings)
    found = parse_store_url(url)
    if found.scheme == "chdb":
        return f"chdb:{data.relative(Path(found.path).resolve())}"
    return redact_url(url)


def _prompt_rows(data: DataDir, shard: str, ns: str) -> pa.Table:
    rows = read_shard(data, shard)
    ids, vecs = read_vectors(data.vectors(ns, "text", shard))
    if ids != rows["id"].to_pylist():
        raise RuntimeError(f"load {shard}: text vectors do not match the shard's rows")
    n = rows.num_rows
    return pa.table(
        {
            "id": rows["id"],
            "prompt": rows["prompt"],
            "url": rows["url"],
            "width": rows["width"].cast(pa.uint32()),
            "height": rows["height"].cast(pa.uint32()),
            "source_site": rows["source_site"],
            **{c: rows[c] for c in GENERATION_COLUMNS},
            "origin": pa.array(["dataset"] * n),
            "shard": pa.array([shard] * n),
            "model": pa.array([ns] * n),
            "prompt_vector": list_column(vecs),
        }
    )


def _image_rows(data: DataDir, shard: str, ns: str, prompts: pa.Table) -> pa.Table:
    """The image rows of the shard's live ``prompts`` that have an image vector."""
    ids, vecs = read_vectors(data.vectors(ns, "image", shard))
    index = {rid: k for k, rid in enumerate(prompts["id"].to_pylist())}
    keep = [k for k, rid in enumerate(ids) if rid in index]  # retired rows have no image row
    ids, vecs = [ids[k] for k in keep], vecs[keep]
    status = read_status(data, shard).select(["id", "orig_width", "orig_height"]).to_pydict()
    size = {i: (w or 0, h or 0) for i, w, h in zip(*status.values(), strict=True)}
    picked = prompts.take(pa.array([index[i] for i in ids], pa.int64()))
    kept = ("id", "prompt", "url", "source_site", *GENERATION_COLUMNS, "origin", "shard", "model")
    columns = {c: picked[c] for c in kept}
    return pa.table(
        {
            **columns,
            "width": pa.array([size[i][0] for i in ids], pa.uint32()),
            "height": pa.array([size[i][1] for i in ids], pa.uint32()),
            "image_vector": list_column(vecs),
        }
    )


def reconcile(data: DataDir, settings: Settings, shards: list[str]) -> dict[str, int]:
    """Make the store and the image cache hold what the plan holds: drop dataset rows under
    shard names the plan lacks (a forced re-plan) and rows later plans retired, and the cached
    images of rows the source no longer has (unless a later generation brought them back).
    Progress is the last generation applied (``state/reconciled.json``; a forced re-plan
    removes it): every step is a delete, so a rerun after a death anywhere applies the same
    generations again harmlessly. Returns what went, per table and from the cache."""
    plan = committed(data)
    through = len(plan.generations) if plan else 0
    retired = read_retired(data, manifest=plan)
    todo = retired.filter(pc.greater(retired["generation"], _reconciled_through(data)))
    pairs = list(zip(todo["shard"].to_pylist(), todo["id"].to_pylist(), strict=True))
    with store_turn(settings, "reconcile with the plan") as store:
        out = {
            name: store.drop_dataset_rows(name, keep_shards=shards, retired=pairs)
            for name in ("prompts", "images")
        }
    removed = todo.filter(pc.equal(todo["reason"], "removed"))["id"]
    live = read_index(data, plan)["id"]
    gone = pc.filter(removed, pc.invert(pc.is_in(removed, value_set=live))).to_pylist()
    out["cache"] = ImageCache.open(data.image_cache, settings.lmdb_map_size).delete(gone)
    write_json(data.reconciled, {"generation": through})
    return out


def _reconciled_through(data: DataDir) -> int:
    """The last plan generation reconcile applied (0: none, or a record of the older kind, a
    row offset: applying everything again only repeats deletes)."""
    path = data.reconciled
    return int(read_json(path).get("generation", 0)) if path.exists() else 0


@task(name=f"{STAGE}-reconcile")
def reconcile_task(data_dir: str, settings: Settings, shards: list[str]) -> dict[str, int]:
    """Prefect task: ``reconcile`` (in the flow's process, beside the loads)."""
    return reconcile(DataDir(data_dir), settings, shards)


@task(name=STAGE, retry_condition_fn=not_retried(ModelMismatch))
def load_task(shard: str, data_dir: str, settings: Settings, *, force: bool = False) -> ShardStats:
    """Prefect task: load one shard (one turn with the store)."""
    with Markers(DataDir(data_dir), STAGE).recording(shard):
        return run_shard(shard, DataDir(data_dir), settings, force=force)
