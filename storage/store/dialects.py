"""The few places where ClickHouse and MyScale SQL differ: distance, index DDL, index status.
Embedded chDB speaks ClickHouse's SQL."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class IndexParams:
    """HNSW parameters (ClickHouse); MyScale picks its own for MSTG/SCANN."""

    quantization: str = "bf16"
    m: int = 32
    ef_construction: int = 128


class ClickHouseDialect:
    """ClickHouse >= 25.8 (and chDB): cosineDistance and the vector_similarity index."""

    name = "clickhouse"
    # its HNSW index post-filters: a filtered search is planned first (storage/store/knn.py)
    plans_filters = True
    # a DELETE returns at once and is waited for in polls (storage/store/mutations.py)
    async_delete: dict[str, int] = {"lightweight_deletes_sync": 0}  # noqa: RUF012

    def distance(self, column: str, param: str) -> str:
        return f"cosineDistance({column}, {param})"

    def add_index(self, table: str, column: str, dim: int, p: IndexParams) -> list[str]:
        spec = f"'hnsw', 'cosineDistance', {dim}, '{p.quantization}', {p.m}, {p.ef_construction}"
        return [
            f"ALTER TABLE {table} ADD INDEX IF NOT EXISTS {column}_idx {column} "
            f"TYPE vector_similarity({spec}) GRANULARITY 100000000"
        ]

    def materialize_index(self, table: str, column: str) -> str | None:
        """The mutation that builds the index on existing parts (sent without waiting)."""
        return f"ALTER TABLE {table} MATERIALIZE INDEX {column}_idx SETTINGS mutations_sync = 0"

    def index_status(self) -> str:
        """SQL listing a table's vector indexes; binds {db:String} and {table:String}."""
        return (
            "SELECT name, type, data_compressed_bytes FROM system.data_skipping_indices "
            "WHERE database = {db:String} AND table = {table:String} "
            "AND type = 'vector_similarity'"
        )


class MyScaleDialect(ClickHouseDialect):
    """MyScale: distance(), ADD VECTOR INDEX (MSTG on MyScale Cloud, SCANN on MyScaleDB)."""

    name = "myscale"
    plans_filters = False  # MyScale pre-filters its vector indexes itself
    async_delete: dict[str, int] = {}  # noqa: RUF012  # its DELETE returns when done

    def __init__(self, index_type: str = "MSTG") -> None:
        if index_type not in ("MSTG", "SCANN"):
            raise ValueError(f"MyScale index type must be MSTG or SCANN, not {index_type!r}")
        self.index_type = index_type

    def distance(self, column: str, param: str) -> str:
        return f"distance({column}, {param})"

    def add_index(self, table: str, column: str, dim: int, p: IndexParams) -> list[str]:
        return [
            f"ALTER TABLE {table} ADD VECTOR INDEX IF NOT EXISTS {column}_idx {column} "
            f"TYPE {self.index_type}('metric_type=Cosine')"
        ]

    def materialize_index(self, table: str, column: str) -> str | None:
        return None  # a vector index is built by its own background process

    def index_status(self) -> str:
        return (
            "SELECT name, type, status FROM system.vector_indices "
            "WHERE database = {db:String} AND table = {table:String}"
        )


def dialect_for(scheme: str) -> ClickHouseDialect:
    """The SQL dialect of a store URL's scheme (chdb and clickhouse share one)."""
    return MyScaleDialect() if scheme == "myscale" else ClickHouseDialect()
