"""plan: stream the source, normalise rows, reject bad ones with a reason, and split the valid
ones into numbered shards — incrementally: planning a changed source again keeps every existing
shard (and its work), puts only new and changed rows into new shards, and retires the old copies
of changed rows and the rows the source no longer has.

Memory stays flat as the source grows: rows stream through in Arrow batches into a staging file;
duplicates and changes are found on 16-byte digests, not on Python sets of ids.
"""

from __future__ import annotations

import hashlib
import shutil
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from prefect import task

from promptlake.storage.datadir import diskspace
from promptlake.storage.datadir.layout import DataDir, atomic_path, read_json, write_json
from promptlake.storage.datadir.planfiles import (
    INDEX_SCHEMA,
    SHARD_SCHEMA,
    add_retired,
    read_index,
    read_retired,
    read_shard,
    write_index,
    write_shard,
)
from promptlake.storage.datadir.records import (
    REQUIRED_COLUMNS,
    PlanGeneration,
    PlanManifest,
    ShardRef,
    SourceInfo,
    shard_name,
)
from promptlake.tasks.source.rows import PlanError, check_row, fingerprint, read_batches

__all__ = ["PlanError", "plan", "plan_task", "read_shard"]
STAGE = "plan"
STAGING_SCHEMA = SHARD_SCHEMA.append(pa.field("digest", pa.binary(16))).append(
    pa.field("fingerprint", pa.binary(16))
)
REJECT_SCHEMA = pa.schema(
    [("row_number", pa.int64()), ("reason", pa.string()), ("detail", pa.string())]
    + [(c, pa.string()) for c in REQUIRED_COLUMNS]
)


def digest(rid: str) -> bytes:
    return hashlib.blake2b(rid.encode(), digest_size=16).digest()


@dataclass
class _Staged:
    """What reading the source found: rows read, reject reasons, and the staging file."""

    total: int = 0
    reasons: Counter[str] = field(default_factory=Counter)


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
    rows and retires the rows it no longer has. ``force`` re-plans from scratch. A data dir
    keeps its shard size: a size the user did not give (``size_given=False``) yields to it, a
    different one given is an error."""
    if shard_size < 1:
        raise PlanError(f"shard size must be >= 1, got {shard_size}")
    if limit is not None and limit < 1:
        raise PlanError(f"limit must be >= 1, got {limit}")
    if force:  # the ingest record, the source and the image cache stay
        for path in data.shard_work():
            shutil.rmtree(path, ignore_errors=True)
    old = PlanManifest.from_dict(read_json(data.manifest)) if data.manifest.exists() else None
    if old and old.shard_size != shard_size:
        if size_given:
            raise PlanError(
                f"{data.root} was planned with shard size {old.shard_size}, not {shard_size}; "
                "use the same size, a new --data-dir, or --force to re-plan (every stage redoes "
                "every shard)"
            )
        shard_size = old.shard_size
    if old and (old.source_sha256, old.limit) == (info.sha256, limit):
        return old
    # staging, shards, index and rejects together stay under the source's size
    diskspace.check(data.root, need=info.size, floor=min_free, what="the plan", data_root=data.root)
    return _plan_generation(info, data, old, shard_size=shard_size, limit=limit)


def _plan_generation(
    info: SourceInfo, data: DataDir, old: PlanManifest | None, *, shard_size: int, limit: int | None
) -> PlanManifest:
    gen = len(old.generations) + 1 if old else 1
    with atomic_path(data.rejects) as tmp, pq.ParquetWriter(tmp, REJECT_SCHEMA) as rejects:
        staged = _stage(info, data, rejects, limit)
        winners = _drop_duplicates(data, rejects, staged)
    new, changed, removed, unchanged = _diff(winners, read_index(data))
    first = int(old.shards[-1].name) + 1 if old and old.shards else 0
    shards, placed = _write_shards(data, new["row_number"].combine_chunks(), shard_size, first)
    gone = pa.concat_tables(
        [
            changed.select(["old_shard", "old_id"]).rename_columns(["shard", "id"]),
            removed.select(["shard", "id"]),
        ]
    )
    reasons = ["changed"] * changed.num_rows + ["removed"] * removed.num_rows
    gone = gone.append_column("generation", pa.array([gen] * gone.num_rows, pa.int32()))
    add_retired(data, gone.append_column("reason", pa.array(reasons, pa.string())))
    write_index(data, pa.concat_tables([unchanged, placed]))
    data.staging.unlink(missing_ok=True)
    manifest = _manifest(info, data, old, staged, shards, shard_size=shard_size, limit=limit)
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
    write_json(data.manifest, manifest.to_dict())
    return manifest


def _stage(info: SourceInfo, data: DataDir, rejects: pq.ParquetWriter, limit: int | None):
    """Pass 1: every row checked; the valid ones, with their digests, into the staging file."""
    staged = _Staged()
    bad: list[dict] = []

    def malformed(line: int | None, text: str) -> None:
        staged.reasons["malformed_row"] += 1
        detail = f"line {line}: {text[:300]}" if line else text[:300]
        bad.append({"row_number": None, "reason": "malformed_row", "detail": detail})

    def bad_encoding(line: int | None, detail: str, values: dict[str, str | None]) -> None:
        staged.reasons["bad_encoding"] += 1
        bad.append({"row_number": None, "reason": "bad_encoding", "detail": detail})
        bad[-1].update({c: values.get(c) for c in REQUIRED_COLUMNS})

    columns, batches = read_batches(Path(info.path), info.fmt, malformed, bad_encoding)
    data.staging.parent.mkdir(parents=True, exist_ok=True)
    with pq.ParquetWriter(data.staging, STAGING_SCHEMA) as out:
        for batch in batches:
            good = []
            for rec in batch.to_pylist():
                if limit is not None and staged.total >= limit:
                    break
                row, reason, detail = check_row(rec, columns)
                if row is None:
                    staged.reasons[reason] += 1
                    keep = {c: rec[c] for c in REQUIRED_COLUMNS}
                    bad.append({"row_number": staged.total, "reason": reason, "detail": detail})
                    bad[-1].update(keep)
                else:
                    row.update(digest=digest(row["id"]), fingerprint=fingerprint(row))
                    good.append({"row_number": staged.total, **row})
                staged.total += 1
            out.write_table(pa.Table.from_pylist(good, schema=STAGING_SCHEMA))
            rejects.write_table(pa.Table.from_pylist(bad, schema=REJECT_SCHEMA))
            bad.clear()
            if limit is not None and staged.total >= limit:
                break
    return staged


def _drop_duplicates(data: DataDir, rejects: pq.ParquetWriter, staged: _Staged) -> pa.Table:
    """Pass 2: the first row of each id wins; later ones become ``duplicate_id`` rejects.
    Returns the winners' (row_number, digest, fingerprint)."""
    t = pq.read_table(data.staging, columns=["row_number", "digest", "fingerprint"])
    if not t.num_rows:
        return t
    order = pc.sort_indices(t, sort_keys=[("digest", "ascending"), ("row_number", "ascending")])
    digests = t["digest"].take(order)
    repeat = pc.equal(digests.slice(1), digests.slice(0, len(digests) - 1))
    is_dup = pa.concat_arrays([pa.array([False]), repeat.combine_chunks()])
    dups = pc.filter(t["row_number"].take(order), is_dup).combine_chunks()
    if len(dups):
        staged.reasons["duplicate_id"] += len(dups)
        for batch in pq.ParquetFile(data.staging).iter_batches(batch_size=65536):
            hit = batch.filter(pc.is_in(batch["row_number"], value_set=dups))
            rejects.write_table(_duplicate_rejects(hit))
    return t.filter(pc.invert(pc.is_in(t["row_number"], value_set=dups)))


def _duplicate_rejects(rows: pa.RecordBatch) -> pa.Table:
    out = []
    for r in rows.to_pylist():
        detail = f"id {r['id']!r} appeared earlier; the first one is kept"
        values = {c: None if r[c] is None else str(r[c]) for c in REQUIRED_COLUMNS}
        out.append({"row_number": r["row_number"], "reason": "duplicate_id", "detail": detail})
        out[-1].update(values)
    return pa.Table.from_pylist(out, schema=REJECT_SCHEMA)


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


def _write_shards(
    data: DataDir, row_numbers: pa.Array, shard_size: int, first: int
) -> tuple[list[ShardRef], pa.Table]:
    """Pass 3: the chosen rows, in source order, into shards ``first``, ``first + 1``…; returns
    the shards and the index rows (id, digest, fingerprint, shard) of what they hold."""
    out = _ShardWriter(data, shard_size, first)
    if len(row_numbers):
        for batch in pq.ParquetFile(data.staging).iter_batches(batch_size=65536):
            out.add(batch.filter(pc.is_in(batch["row_number"], value_set=row_numbers)))
    out.close()
    placed = pa.concat_tables(out.placed) if out.placed else INDEX_SCHEMA.empty_table()
    return out.shards, placed


class _ShardWriter:
    """Cuts a stream of row batches into shard files of ``size`` rows (the last may be short)."""

    def __init__(self, data: DataDir, size: int, first: int) -> None:
        self.data, self.size, self.first = data, size, first
        self.pending: list[pa.RecordBatch] = []
        self.shards: list[ShardRef] = []
        self.placed: list[pa.Table] = []

    def add(self, batch: pa.RecordBatch) -> None:
        self.pending.append(batch)
        while sum(b.num_rows for b in self.pending) >= self.size:
            rows = pa.Table.from_batches(self.pending)
            self._write(rows.slice(0, self.size))
            self.pending = rows.slice(self.size).to_batches()

    def close(self) -> None:
        rows = pa.Table.from_batches(self.pending, schema=STAGING_SCHEMA)
        if rows.num_rows:
            self._write(rows)
        self.pending = []

    def _write(self, rows: pa.Table) -> None:
        name = shard_name(self.first + len(self.shards))
        write_shard(self.data, name, rows.select(SHARD_SCHEMA.names))
        self.shards.append(ShardRef(name, rows.num_rows))
        index = rows.select(["id", "digest", "fingerprint"])
        self.placed.append(index.append_column("shard", pa.array([name] * rows.num_rows)))


def _manifest(
    info: SourceInfo,
    data: DataDir,
    old: PlanManifest | None,
    staged: _Staged,
    new_shards: list[ShardRef],
    *,
    shard_size: int,
    limit: int | None,
) -> PlanManifest:
    """The plan as it now stands: every shard with its retired rows, the source's counts."""
    retired = read_retired(data)
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
