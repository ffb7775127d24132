"""plan: stream the source, normalise rows, reject bad ones with a reason, and split the valid
ones into numbered shards — incrementally: planning a changed source again keeps every existing
shard (and its work), puts only new and changed rows into new shards, and retires the old copies
of changed rows and the rows the source no longer has.

Memory stays flat as the source grows: rows stream through in Arrow batches into a staging file;
duplicates and changes are found on 16-byte digests, not on Python sets of ids.
"""

from __future__ import annotations

import time
from collections import Counter

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from prefect import task

from promptlake.storage.datadir import diskspace
from promptlake.storage.datadir.layout import DataDir, atomic_path, read_json, remove, write_json
from promptlake.storage.datadir.planfiles import (
    INDEX_SCHEMA,
    RETIRED_SCHEMA,
    committed,
    read_index,
    read_retired,
    read_shard,
    write_generation,
)
from promptlake.storage.datadir.records import (
    PlanGeneration,
    PlanManifest,
    ShardRef,
    SourceInfo,
)
from promptlake.tasks.source.rows import PlanError, fingerprint
from promptlake.tasks.source.staging import (
    REJECT_SCHEMA,
    Staged,
    digest,
    drop_duplicates,
    stage,
    write_shards,
)

__all__ = ["PlanError", "plan", "plan_task", "read_shard"]
STAGE = "plan"


def plan(
    info: SourceInfo,
    data: DataDir,
    *,
    shard_size: int,
    limit: int | None = None,
    force: bool = False,
    size_given: bool = True,
    min_free: int = 0,
) -> PlanManifest:
    """Plan ``info`` into shards of ``shard_size``. The same source gives the same shards (the
    plan is reused); a changed source adds a generation of new shards for its new and changed
    rows and retires the rows it no longer has. ``force`` re-plans from scratch; a forced plan
    that did not finish is finished by the next plan, forced or not. A data dir keeps its
    shard size: a size the user did not give (``size_given=False``) yields to it, a different
    one given is an error."""
    if shard_size < 1:
        raise PlanError(f"shard size must be >= 1, got {shard_size}")
    if limit is not None and limit < 1:
        raise PlanError(f"limit must be >= 1, got {limit}")
    forcing = force or data.force_intent.exists()
    if forcing:
        shard_size = _clear_for_force(data, shard_size if force else None)
    old = committed(data)
    if old and old.shard_size != shard_size:
        if size_given:
            raise PlanError(
                f"{data.root} was planned with shard size {old.shard_size}, not {shard_size}; "
                "use the same size, a new --data-dir, or --force to re-plan (every stage redoes "
                "every shard)"
            )
        shard_size = old.shard_size
    if old and (old.source_sha256, old.limit) == (info.sha256, limit):
        if old.generation:  # what a death right after the commit left behind
            _collect_garbage(data, old.generation)
        return old
    # staging, shards, index and rejects together stay under the source's size
    diskspace.check(data.root, need=info.size, floor=min_free, what="the plan", data_root=data.root)
    manifest = _plan_generation(info, data, old, shard_size=shard_size, limit=limit)
    if forcing:
        remove(data.force_intent)
    return manifest


def _clear_for_force(data: DataDir, shard_size: int | None) -> int:
    """Record the intent of a forced re-plan (with its shard size), then clear every stage's
    work: a death anywhere in between leaves the intent, which the next plan finishes. The
    ingest record, the source, the image cache and the store stay (the store keeps serving its
    rows until the new shards replace them). Returns the shard size to plan with."""
    if shard_size is None:
        shard_size = int(read_json(data.force_intent)["shard_size"])
    else:
        write_json(data.force_intent, {"shard_size": shard_size, "at": time.time()})
    for path in data.shard_work():
        remove(path)
    return shard_size


def _plan_generation(
    info: SourceInfo, data: DataDir, old: PlanManifest | None, *, shard_size: int, limit: int | None
) -> PlanManifest:
    """Write generation ``g`` whole — its new shard files, then its rejects, retired rows and
    row index in ``plan/generations/<g>/`` — and commit it by renaming the manifest into
    place. Until that rename the previous generation is the plan; a rerun after a death writes
    the same generation again, identically."""
    gen = len(old.generations) + 1 if old else 1
    first = int(old.shards[-1].name) + 1 if old and old.shards else 0
    _clear_attempt(data, gen, first)
    previous = _previous_index(data, old)
    with (
        atomic_path(data.plan_file(gen, "rejects")) as tmp,
        pq.ParquetWriter(tmp, REJECT_SCHEMA) as rejects,
    ):
        staged = stage(info, data, rejects, limit)
        winners = drop_duplicates(data, rejects, staged)
    new, changed, removed, unchanged = _diff(winners, previous)
    shards, placed = write_shards(data, new["row_number"].combine_chunks(), shard_size, first)
    gone = pa.concat_tables(
        [
            changed.select(["old_shard", "old_id"]).rename_columns(["shard", "id"]),
            removed.select(["shard", "id"]),
        ]
    )
    reasons = ["changed"] * changed.num_rows + ["removed"] * removed.num_rows
    gone = gone.append_column("generation", pa.array([gen] * gone.num_rows, pa.int32()))
    gone = gone.append_column("reason", pa.array(reasons, pa.string()))
    retired = pa.concat_tables([read_retired(data, manifest=old), gone.cast(RETIRED_SCHEMA)])
    write_generation(data, gen, index=pa.concat_tables([unchanged, placed]), retired=retired)
    manifest = _manifest(info, old, staged, shards, retired, shard_size=shard_size, limit=limit)
    manifest.generation = gen
    manifest.generations.append(
        PlanGeneration(
            number=gen,
            source_sha256=info.sha256,
            planned_at=time.time(),
            rows_total=manifest.rows_total,
            added=new.num_rows - changed.num_rows,
            changed=changed.num_rows,
            removed=removed.num_rows,
            unchanged=unchanged.num_rows,
            shards=[s.name for s in shards],
        )
    )
    write_json(data.manifest, manifest.to_dict())  # the commit
    _collect_garbage(data, gen)
    return manifest


def _clear_attempt(data: DataDir, gen: int, first: int) -> None:
    """Leftovers of a plan of generation ``gen`` that died before its commit: its folder, shard
    files the manifest never named (no stage ever ran on them) and half-written files."""
    remove(data.generation_dir(gen))
    files = data.shards_dir.glob("*.parquet")
    names = [p for p in files if p.stem.isdigit() and int(p.stem) >= first]
    for path in [*names, *data.plan_dir.glob("**/.*.tmp"), data.staging]:
        remove(path)


def _collect_garbage(data: DataDir, gen: int) -> None:
    """After generation ``gen``'s commit: earlier generations' files and the scratch file."""
    folders = data.generation_dir(gen).parent
    for path in sorted(folders.iterdir() if folders.exists() else []):
        if path.name.isdigit() and int(path.name) < gen:
            remove(path)
    for path in [*(data.plan_file(0, n) for n in ("index", "retired", "rejects")), data.staging]:
        remove(path)


def _previous_index(data: DataDir, old: PlanManifest | None) -> pa.Table:
    """The committed plan's row index. A plan made before generations had folders may have
    written an index naming shards its manifest never did (it died before the manifest): that
    index is rebuilt from the manifest's shard files, minus their retired rows."""
    index = read_index(data, old)
    if old is None or old.generation or not index.num_rows:
        return index
    known = {s.name for s in old.shards}
    if set(pc.unique(index["shard"]).to_pylist()) <= known:
        return index
    retired = read_retired(data, manifest=old)
    gone = set(zip(retired["shard"].to_pylist(), retired["id"].to_pylist(), strict=True))
    live: dict[str, dict] = {}
    for ref in old.shards:  # a later shard's copy of an id is the newer one
        for row in read_shard(data, ref.name).to_pylist():
            if (ref.name, row["id"]) not in gone:
                live[row["id"]] = {"shard": ref.name, **row}
    rows = [{**r, "digest": digest(r["id"]), "fingerprint": fingerprint(r)} for r in live.values()]
    return pa.Table.from_pylist(rows, schema=INDEX_SCHEMA)


def _diff(winners: pa.Table, index: pa.Table) -> tuple[pa.Table, ...]:
    """Compare the source's rows with the last plan's: (new — added or changed — rows to shard,
    changed rows with their old shard and id, removed rows, unchanged index rows)."""
    old = pa.table(
        {
            "digest": index["digest"],
            "old_fingerprint": index["fingerprint"],
            "old_shard": index["shard"],
            "old_id": index["id"],
        }
    )
    joined = winners.join(old, keys="digest", join_type="left outer")
    known = pc.is_valid(joined["old_fingerprint"])
    same = pc.and_(known, pc.equal(joined["fingerprint"], joined["old_fingerprint"]))
    same = pc.fill_null(same, False)
    new = joined.filter(pc.invert(same))
    changed = new.filter(pc.is_valid(new["old_fingerprint"]))
    kept = joined.filter(same)
    unchanged = pa.table(
        {
            "id": kept["old_id"],
            "digest": kept["digest"],
            "fingerprint": kept["fingerprint"],
            "shard": kept["old_shard"],
        }
    )
    gone = old.join(winners.select(["digest"]), keys="digest", join_type="left anti")
    removed = pa.table({"shard": gone["old_shard"], "id": gone["old_id"]})
    return new, changed, removed, unchanged


def _manifest(
    info: SourceInfo,
    old: PlanManifest | None,
    staged: Staged,
    new_shards: list[ShardRef],
    retired: pa.Table,
    *,
    shard_size: int,
    limit: int | None,
) -> PlanManifest:
    """The plan as it now stands: every shard with its retired rows, the source's counts."""
    per_shard = Counter(retired["shard"].to_pylist()) if retired.num_rows else Counter()
    shards = [ShardRef(s.name, s.rows, per_shard[s.name]) for s in (old.shards if old else [])]
    shards += new_shards
    rejected = sum(staged.reasons.values())
    return PlanManifest(
        source_sha256=info.sha256,
        shard_size=shard_size,
        limit=limit,
        # rows that never reached the checks: cut wrong, or not text
        rows_total=staged.total + staged.reasons["malformed_row"] + staged.reasons["bad_encoding"],
        rows_valid=sum(s.live for s in shards),
        rows_rejected=rejected,
        rejects_by_reason=dict(staged.reasons),
        shards=shards,
        generations=list(old.generations) if old else [],
    )


@task(name=STAGE)
def plan_task(
    info: SourceInfo,
    data_dir: str,
    shard_size: int,
    limit: int | None,
    *,
    force: bool = False,
    size_given: bool = True,
    min_free: int = 0,
) -> PlanManifest:
    """Prefect task: plan shards (reused when the source did not change)."""
    data = DataDir(data_dir)
    return plan(
        info,
        data,
        shard_size=shard_size,
        limit=limit,
        force=force,
        size_given=size_given,
        min_free=min_free,
    )
