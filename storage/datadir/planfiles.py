"""The plan's files: shard files (the rows of each shard), the row index (every live row's id,
fingerprint and shard, for the next incremental plan) and the retired rows (rows of existing
shards that a later plan replaced or removed)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from promptlake.storage.datadir.layout import DataDir, atomic_path

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


def read_index(data: DataDir) -> pa.Table:
    """Every live row's id, fingerprint and shard (empty before the first plan)."""
    path = data.row_index
    return pq.read_table(path) if path.exists() else INDEX_SCHEMA.empty_table()


def write_index(data: DataDir, table: pa.Table) -> None:
    with atomic_path(data.row_index) as tmp:
        pq.write_table(table.cast(INDEX_SCHEMA), tmp)


def read_retired(data: DataDir, shard: str | None = None) -> pa.Table:
    """Retired rows, of one shard or of all."""
    path: Path = data.retired_rows
    if not path.exists():
        return RETIRED_SCHEMA.empty_table()
    table = pq.read_table(path)
    return table if shard is None else table.filter(pc.equal(table["shard"], shard))


def add_retired(data: DataDir, rows: pa.Table) -> None:
    """Append ``rows`` to the retired rows (written whole, atomically)."""
    if not rows.num_rows:
        return
    table = pa.concat_tables([read_retired(data), rows.cast(RETIRED_SCHEMA)])
    with atomic_path(data.retired_rows) as tmp:
        pq.write_table(table, tmp)
