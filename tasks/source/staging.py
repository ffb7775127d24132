"""Staging a source for the plan: every row streamed in Arrow batches and checked (a bad row is a
reject with its reason), the valid ones with the digests of their id and content into a scratch
file, and the first row of each id kept. Memory stays flat as the source grows: duplicates are
found on 16-byte digests, not on Python sets of ids."""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from promptlake.storage.datadir import crashpoints
from promptlake.storage.datadir.layout import DataDir
from promptlake.storage.datadir.planfiles import INDEX_SCHEMA, SHARD_SCHEMA, write_shard
from promptlake.storage.datadir.records import REQUIRED_COLUMNS, ShardRef, SourceInfo, shard_name
from promptlake.tasks.source.rows import check_row, fingerprint, read_batches

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
class Staged:
    """What reading the source found: rows read, reject reasons, and the staging file."""

    total: int = 0
    reasons: Counter[str] = field(default_factory=Counter)


def stage(info: SourceInfo, data: DataDir, rejects: pq.ParquetWriter, limit: int | None):
    """Pass 1: every row checked; the valid ones, with their digests, into the staging file."""
    staged = Staged()
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
            crashpoints.file_written(data.staging)  # a scratch file: a death here costs nothing
            bad.clear()
            if limit is not None and staged.total >= limit:
                break
    return staged


def drop_duplicates(data: DataDir, rejects: pq.ParquetWriter, staged: Staged) -> pa.Table:
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


def write_shards(
    data: DataDir, row_numbers: pa.Array, shard_size: int, first: int
) -> tuple[list[ShardRef], pa.Table]:
    """Pass 3: the chosen rows, in source order, into shards ``first``, ``first + 1``…; returns
    the shards and the index rows (id, digest, fingerprint, shard) of what they hold."""
    out = ShardWriter(data, shard_size, first)
    if len(row_numbers):
        for batch in pq.ParquetFile(data.staging).iter_batches(batch_size=65536):
            out.add(batch.filter(pc.is_in(batch["row_number"], value_set=row_numbers)))
    out.close()
    placed = pa.concat_tables(out.placed) if out.placed else INDEX_SCHEMA.empty_table()
    return out.shards, placed


class ShardWriter:
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
