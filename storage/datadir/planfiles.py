"""The plan's files: shard files (the rows of each shard) and, per plan generation, the row
index (every live row's id, fingerprint and shard, for the next incremental plan), the retired
rows (rows of existing shards that a later plan replaced or removed) and the rejects. Readers see
only what the manifest committed."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from promptlake.storage.datadir.layout import DataDir, atomic_path, read_json
from promptlake.storage.datadir.records import PlanManifest

# the generation columns: what produced the image, kept with the row and filterable
GENERATION_COLUMNS = ("negative_prompt", "model_name", "tool", "settings", "extra")
SHARD_SCHEMA = pa.schema(
    [
        ("row_number", pa.int64()),
        ("id", pa.string()),
        ("prompt", pa.string()),
        ("url", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("source_site", pa.string()),
        ("negative_prompt", pa.string()),
        ("model_name", pa.string()),
        ("tool", pa.string()),
        ("settings", pa.string()),  # JSON object: seed, steps, sampler, CFG… as the source wrote
        ("extra", pa.string()),  # JSON object: the source's other columns
    ]
)
INDEX_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("digest", pa.binary(16)),  # of the id: what duplicates and changes are found on
        ("fingerprint", pa.binary(16)),  # of the whole row
        ("shard", pa.string()),
    ]
)
RETIRED_SCHEMA = pa.schema(
    [
        ("shard", pa.string()),
        ("id", pa.string()),
        ("generation", pa.int32()),
        ("reason", pa.string()),  # changed (a newer copy is in a later shard) or removed
    ]
)


def write_shard(data: DataDir, name: str, table: pa.Table) -> None:
    with atomic_path(data.shard_file(name)) as tmp:
        pq.write_table(table.cast(SHARD_SCHEMA), tmp)


def read_shard(data: DataDir, shard: str) -> pa.Table:
    """The planned rows of one shard (files planned before the generation columns existed get
    them empty)."""
    table = pq.read_table(data.shard_file(shard))
    for name in GENERATION_COLUMNS:
        if name not in table.column_names:
            fill = "{}" if name in ("settings", "extra") else ""
            table = table.append_column(name, pa.array([fill] * table.num_rows, pa.string()))
    return table.select(SHARD_SCHEMA.names).cast(SHARD_SCHEMA)


def committed(data: DataDir) -> PlanManifest | None:
    """The plan as its manifest last committed it (None before the first plan)."""
    path = data.manifest
    return PlanManifest.from_dict(read_json(path)) if path.exists() else None


def read_index(data: DataDir, manifest: PlanManifest | None = None) -> pa.Table:
    """Every live row's id, fingerprint and shard in the committed plan (empty before the
    first plan)."""
    m = manifest or committed(data)
    path = data.plan_file(m.generation, "index") if m else None
    return pq.read_table(path) if path and path.exists() else INDEX_SCHEMA.empty_table()


def read_retired(
    data: DataDir, shard: str | None = None, manifest: PlanManifest | None = None
) -> pa.Table:
    """The committed plan's retired rows, of one shard or of all. A plan made before
    generations had folders appended them, and one that died half-way may have appended a
    generation the manifest never named, or one twice: those are left out here."""
    m = manifest or committed(data)
    path = data.plan_file(m.generation, "retired") if m else None
    if m is None or path is None or not path.exists():
        return RETIRED_SCHEMA.empty_table()
    table = pq.read_table(path).cast(RETIRED_SCHEMA)
    if not m.generation:
        table = _legacy_retired(table, len(m.generations))
    return table if shard is None else table.filter(pc.equal(table["shard"], shard))


def _legacy_retired(table: pa.Table, last: int) -> pa.Table:
    table = table.filter(pc.less_equal(table["generation"], last))
    seen: set[tuple[str, str]] = set()
    first = []
    for key in zip(table["shard"].to_pylist(), table["id"].to_pylist(), strict=True):
        first.append(key not in seen)
        seen.add(key)
    return table.filter(pa.array(first, pa.bool_()))


def rejects_path(data: DataDir, manifest: PlanManifest | None = None) -> Path:
    """The committed plan's rejects file (each bad row of the source with its reason)."""
    m = manifest or committed(data)
    return data.plan_file(m.generation if m else 0, "rejects")


def write_generation(data: DataDir, generation: int, *, index: pa.Table, retired: pa.Table) -> None:
    """Write generation ``generation``'s retired rows (all of them, cumulative: a repeated
    generation rewrites, never appends) and row index; the manifest commits them."""
    for name, table, schema in (
        ("retired", retired, RETIRED_SCHEMA),
        ("index", index, INDEX_SCHEMA),
    ):
        with atomic_path(data.plan_file(generation, name)) as tmp:
            pq.write_table(table.cast(schema), tmp)
