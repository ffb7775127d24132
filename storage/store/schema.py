"""The store's tables, and the DDL a store lacks: none when its schema already matches.

Every DDL statement rewrites a metadata file, and chDB (26.9) can leave that file empty when the
disk is full — a store that never opens again (``storage.store.repair`` mends it). So the schema
step asks the engine which tables and columns exist (one query) and issues only the statements
that are missing: normally none.
"""

from __future__ import annotations

TABLES = {"prompts": "prompt_vector", "images": "image_vector"}
COMMON = (
    ("id", "String"),
    ("prompt", "String"),
    ("url", "String"),
    ("width", "UInt32"),
    ("height", "UInt32"),
    ("source_site", "LowCardinality(String)"),
    ("origin", "LowCardinality(String) DEFAULT 'dataset'"),
    ("parent_ids", "Array(String) DEFAULT []"),
    ("trigger", "String DEFAULT ''"),
    ("shard", "String"),
    ("model", "LowCardinality(String)"),
    ("created_at", "DateTime64(3) DEFAULT now64(3)"),
)
# columns added after stores were first made: created by ALTER where missing (an old store keeps
# its rows; what it never knew reads as the default), each placed after the column named
ADDED = (
    ("trigger", "String DEFAULT ''", "parent_ids"),
    ("negative_prompt", "String DEFAULT ''", "source_site"),
    ("model_name", "LowCardinality(String) DEFAULT ''", "negative_prompt"),
    ("tool", "LowCardinality(String) DEFAULT ''", "model_name"),
    ("settings", "String DEFAULT '{}'", "tool"),
    ("extra", "String DEFAULT '{}'", "settings"),
)
SEARCH_KIND = (  # what was searched with; older logs marked images in the query
    "kind",
    "LowCardinality(String) DEFAULT if(startsWith(query, 'image:'), 'image', 'text')",
    "query",
)
SEARCHES = (
    ("query", "String"),
    SEARCH_KIND[:2],
    ("target", "LowCardinality(String)"),
    ("k", "UInt32"),
    ("best_distance", "Nullable(Float32)"),
    ("elapsed_ms", "Float32"),
    ("at", "DateTime64(3) DEFAULT now64(3)"),
)
COLUMNS_SQL = (
    "SELECT table, groupArray(name) FROM system.columns WHERE database = {db:String} GROUP BY table"
)


def vector_columns() -> list[tuple[str, str]]:
    """A vector table's columns (without its vector) in the order the ALTERs of an old store
    leave them: a new store is made the same."""
    cols = list(COMMON)
    for name, spec, after in ADDED:
        names = [c for c, _ in cols]
        if name not in names:
            cols.insert(names.index(after) + 1, (name, spec))
    return cols


def vector_table(table: str, column: str, dim: int) -> str:
    defs = ", ".join(f"{name} {spec}" for name, spec in vector_columns())
    return (
        f"CREATE TABLE IF NOT EXISTS {table} ({defs}, {column} Array(Float32) CODEC(NONE), "
        f"CONSTRAINT {column}_len CHECK length({column}) = {dim}) "
        # sorted by what filters ask for: a selective filter on these is a few key ranges to
        # scan exactly (storage/store/knn.py); granules of 1024 rows (not ~5k of 2 KB
        # vectors): the scan reads little more than the range
        "ENGINE = MergeTree ORDER BY (source_site, origin, width, height, id) "
        "SETTINGS index_granularity = 1024"
    )


def missing_ddl(db: str, have: dict[str, set[str]], dim: int) -> list[str]:
    """The statements a store whose tables hold ``have`` (table → column names) lacks."""
    out = []
    if "meta" not in have:
        out.append(
            f"CREATE TABLE IF NOT EXISTS {db}.meta (key String, value String) "
            "ENGINE = ReplacingMergeTree ORDER BY key"
        )
    for name, column in TABLES.items():
        if name not in have:
            out.append(vector_table(f"{db}.{name}", column, dim))
            continue
        for col, spec, after in ADDED:
            if col not in have[name]:
                out.append(
                    f"ALTER TABLE {db}.{name} ADD COLUMN IF NOT EXISTS {col} {spec} AFTER {after}"
                )
    kind, spec, after = SEARCH_KIND
    if "searches" not in have:
        columns = ", ".join(f"{name} {spec}" for name, spec in SEARCHES)
        out.append(
            f"CREATE TABLE IF NOT EXISTS {db}.searches ({columns}) ENGINE = MergeTree ORDER BY at"
        )
    elif kind not in have["searches"]:
        out.append(
            f"ALTER TABLE {db}.searches ADD COLUMN IF NOT EXISTS {kind} {spec} AFTER {after}"
        )
    return out


def attach_sql(table: str, uuid: str, dim: int | None) -> str | None:
    """The metadata file chDB would keep for one of promptlake's tables as this version makes
    them (for a store whose file a full disk emptied and no copy was kept); None for a table
    it does not know, or a vector table when the dimension is unknown."""
    if table in TABLES:
        if dim is None:
            return None
        column = TABLES[table]
        defs = [f"`{name}` {spec}" for name, spec in vector_columns()]
        defs += [
            f"`{column}` Array(Float32) CODEC(NONE)",
            f"CONSTRAINT {column}_len CHECK length({column}) = {dim}",
        ]
        tail = "ENGINE = MergeTree\nORDER BY (source_site, origin, width, height, id)\n"
        tail += "SETTINGS index_granularity = 1024"
    elif table == "meta":
        defs, tail = ["`key` String", "`value` String"], "ENGINE = ReplacingMergeTree\nORDER BY key"
    elif table == "searches":
        defs, tail = (
            [f"`{name}` {spec}" for name, spec in SEARCHES],
            "ENGINE = MergeTree\nORDER BY at",
        )
    else:
        return None
    body = ",\n    ".join(defs)
    return f"ATTACH TABLE _ UUID '{uuid}'\n(\n    {body}\n)\n{tail}\n"
