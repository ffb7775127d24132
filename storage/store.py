"""The vector store: prompts and images with their CLIP vectors, in ClickHouse-family databases.

Chosen by URL: ``chdb:///path`` (embedded chDB through clickhouse-connect; one process per
path), ``clickhouse://user:pass@host:port/db`` or ``myscale://…`` (a server). Every value
reaches SQL as a bound parameter; only identifiers of our own schema are formatted in.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse, urlsplit, urlunsplit

import pyarrow as pa

from promptlake.storage.dialects import ClickHouseDialect, IndexParams, MyScaleDialect
from promptlake.storage.hits import Filters, Hit, StoreError, lineage
from promptlake.storage.vectors import ModelMismatch

TABLES = {"prompts": "prompt_vector", "images": "image_vector"}
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
_COMMON = """id String, prompt String, url String, width UInt32, height UInt32,
    source_site LowCardinality(String), origin LowCardinality(String) DEFAULT 'dataset',
    parent_ids Array(String) DEFAULT [], trigger String DEFAULT '', shard String,
    model LowCardinality(String),
    created_at DateTime64(3) DEFAULT now64(3)"""


@dataclass(frozen=True)
class StoreURL:
    scheme: str
    path: str = ""
    host: str = "localhost"
    port: int | None = None
    database: str = "promptlake"
    user: str | None = None
    password: str | None = None


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***``: what logs, markers and the UI may show."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


def parse_store_url(url: str) -> StoreURL:
    """Split a store URL; chdb:///abs/path, clickhouse://[user:pass@]host[:port][/db]."""
    parts = urlparse(url)
    if parts.scheme == "chdb":
        path = unquote(parts.netloc + parts.path)
        if not path:
            raise StoreError(f"chdb URL {url!r} has no path: use chdb:///path/to/store")
        return StoreURL("chdb", path=path)
    if parts.scheme in ("clickhouse", "myscale"):
        shown = redact_url(url)
        if not parts.hostname:
            raise StoreError(f"store URL {shown!r} has no host")
        database = parts.path.strip("/") or "promptlake"
        if not _IDENTIFIER.fullmatch(database):  # it is formatted into SQL as an identifier
            raise StoreError(
                f"database name {database!r} in store URL {shown!r} must be letters, digits and "
                "underscores, not starting with a digit"
            )
        return StoreURL(
            parts.scheme,
            host=parts.hostname,
            port=parts.port,
            database=database,
            user=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
        )
    raise StoreError(
        f"unknown store URL {redact_url(url)!r}: use chdb:///path, clickhouse://… or myscale://…"
    )


class Store:
    """Schema, idempotent per-shard loads, vector indexes and k-NN search."""

    def __init__(
        self, client: Any, dialect: ClickHouseDialect, database: str, embedded: bool = False
    ) -> None:
        self.client, self.dialect, self.db = client, dialect, database
        self.embedded = embedded
        self.url = ""
        self._schema: tuple[str, int] | None = None

    def table(self, name: str) -> str:
        return f"{self.db}.{name}"

    def ensure_schema(self, model: str, dim: int) -> None:
        """Create the tables for vectors of ``model`` (``dim`` long); refuse another model's."""
        if dim < 1:
            raise StoreError(f"vector dimension must be >= 1, got {dim}")
        if self._schema == (model, dim):
            return  # checked on this connection already: no DDL round trips per shard
        self.client.command(f"CREATE DATABASE IF NOT EXISTS {self.db}")
        self.client.command(
            f"CREATE TABLE IF NOT EXISTS {self.table('meta')} (key String, "
            "value String) ENGINE = ReplacingMergeTree ORDER BY key"
        )
        have = self.meta()
        if have and (have.get("model"), have.get("dim")) != (model, str(dim)):
            raise ModelMismatch(
                f"the store holds vectors of {have.get('model')} (dim "
                f"{have.get('dim')}), not of {model} (dim {dim})"
            )
        for name, column in TABLES.items():
            self.client.command(
                f"CREATE TABLE IF NOT EXISTS {self.table(name)} ({_COMMON}, "
                f"{column} Array(Float32) CODEC(NONE), "
                f"CONSTRAINT {column}_len CHECK length({column}) = {dim}) "
                "ENGINE = MergeTree ORDER BY (source_site, origin, id)"
            )
            self.client.command(  # stores made before lineage had a trigger column
                f"ALTER TABLE {self.table(name)} ADD COLUMN IF NOT EXISTS trigger String "
                "DEFAULT '' AFTER parent_ids"
            )
        self.client.command(
            f"CREATE TABLE IF NOT EXISTS {self.table('searches')} (query String, "
            "target LowCardinality(String), k UInt32, best_distance Nullable(Float32), "
            "elapsed_ms Float32, at DateTime64(3) DEFAULT now64(3)) ENGINE = MergeTree ORDER BY at"
        )
        if not have:
            self.client.insert(
                self.table("meta"),
                [["model", model], ["dim", str(dim)]],
                column_names=["key", "value"],
            )
        self._schema = (model, dim)

    def meta(self) -> dict[str, str]:
        rows = self.client.query(f"SELECT key, value FROM {self.table('meta')} FINAL").result_rows
        return dict(rows)

    def load_shard(self, name: str, shard: str, rows: pa.Table) -> int:
        """Replace ``shard``'s rows of table ``name`` with ``rows``: loading twice never
        duplicates (delete, then one Arrow insert)."""
        self._check_table(name)
        where = f"FROM {self.table(name)} WHERE shard = {{shard:String}}"
        present = self.client.query(f"SELECT count() {where}", parameters={"shard": shard})
        if present.result_rows[0][0]:  # a DELETE is a mutation: skip it for a first load
            self.client.command(f"DELETE {where}", parameters={"shard": shard})
        if rows.num_rows:
            self.client.insert_arrow(self.table(name), rows)
        return rows.num_rows

    def drop_dataset_rows(
        self, name: str, *, keep_shards: list[str], retired: list[tuple[str, str]]
    ) -> int:
        """Delete the dataset rows of table ``name`` that the plan no longer holds: those under
        shard names it lacks (a forced re-plan) and the retired ``(shard, id)`` pairs (rows a
        later plan changed or removed). Returns how many rows went."""
        self._check_table(name)
        if not self.client.query(f"EXISTS TABLE {self.table(name)}").result_rows[0][0]:
            return 0
        gone = 0
        for start in range(0, max(len(retired), 1), 10_000):  # bounded statement size
            keys = [f"{shard}/{rid}" for shard, rid in retired[start : start + 10_000]]
            where = (
                f"FROM {self.table(name)} WHERE origin = 'dataset' AND (NOT has({{keep:"
                "Array(String)}, shard) OR has({keys:Array(String)}, concat(shard, '/', id)))"
            )
            params = {"keep": keep_shards, "keys": keys}
            found = self.client.query(f"SELECT count() {where}", parameters=params)
            if found.result_rows[0][0]:
                self.client.command(f"DELETE {where}", parameters=params)
                gone += int(found.result_rows[0][0])
        return gone

    def count(self, name: str) -> int:
        self._check_table(name)
        return int(self.client.query(f"SELECT count() FROM {self.table(name)}").result_rows[0][0])

    def build_index(self, name: str, dim: int, params: IndexParams) -> list[tuple]:
        """Build the vector index of table ``name`` after the bulk load; return its status."""
        self._check_table(name)
        for sql in self.dialect.add_index(self.table(name), TABLES[name], dim, params):
            self.client.command(sql)
        return self.client.query(
            self.dialect.index_status(), parameters={"db": self.db, "table": name}
        ).result_rows

    def search(
        self, name: str, vector: list[float], k: int = 10, filters: Filters | None = None
    ) -> list[Hit]:
        """The ``k`` nearest rows of table ``name``; with filters, still ``k`` when ``k`` match
        (an HNSW index post-filters, so a short answer is redone exactly)."""
        self._check_table(name)
        if not 1 <= k <= 10_000:
            raise StoreError(f"k must be between 1 and 10000, got {k}")
        filters = filters or Filters()
        hits = self._knn(name, vector, k, filters, exact=False)
        if filters.active and len(hits) < k:
            hits = self._knn(name, vector, k, filters, exact=True)
        return hits

    def _knn(
        self, name: str, vector: list[float], k: int, filters: Filters, exact: bool
    ) -> list[Hit]:
        where, params = filters.sql()
        dist = self.dialect.distance(TABLES[name], "{q:Array(Float32)}")
        if exact:
            settings = " SETTINGS use_skip_indexes = 0"
        else:
            settings = self.dialect.filtered_search_settings(8) if filters.active else ""
        sql = (
            f"SELECT id, prompt, url, {dist} AS distance, source_site, width, height, origin, "
            "parent_ids, trigger, toString(created_at) "
            f"FROM {self.table(name)}{where} ORDER BY distance LIMIT {{k:UInt32}}{settings}"
        )
        rows = self.client.query(
            sql, parameters={**params, "q": list(map(float, vector)), "k": k}
        ).result_rows
        return [Hit(*r[:3], float(r[3]), *r[4:8], extra=lineage(*r[7:])) for r in rows]

    def log_search(
        self, query: str, target: str, k: int, hits: list[Hit], elapsed_ms: float
    ) -> None:
        """Remember a search (the feedback flow looks for poorly served ones)."""
        best = hits[0].distance if hits else None
        self.client.insert(
            self.table("searches"),
            [[query[:2000], target, k, best, elapsed_ms]],
            column_names=["query", "target", "k", "best_distance", "elapsed_ms"],
        )

    def weak_searches(
        self, *, since_hours: float, min_distance: float, limit: int
    ) -> list[tuple[str, float | None, str]]:
        """Recent text searches for prompts that the store served poorly (its best hit at least
        ``min_distance`` away, or nothing): (query, best distance, last time), newest first."""
        rows = self.client.query(
            f"SELECT query, min(best_distance) AS best, toString(max(at)) AS last "
            f"FROM {self.table('searches')} WHERE target = 'prompts' "
            "AND NOT startsWith(query, 'image:') "
            "AND at >= now64(3) - toIntervalSecond({secs:UInt64}) "
            "GROUP BY query HAVING best IS NULL OR best >= {d:Float64} "
            "ORDER BY last DESC, query LIMIT {n:UInt32}",
            parameters={"secs": int(since_hours * 3600), "d": min_distance, "n": limit},
        ).result_rows
        return [(q, None if b is None else float(b), at) for q, b, at in rows]

    def _check_table(self, name: str) -> None:
        if name not in TABLES:
            raise StoreError(f"unknown table {name!r}: use prompts or images")

    def close(self) -> None:
        with _OPEN_LOCK:
            if _OPEN.get(self.url) is self:
                del _OPEN[self.url]
        self.client.close()


_OPEN: dict[str, Store] = {}
_OPEN_LOCK = threading.Lock()


def open_store(url: str) -> Store:
    """The process's store for ``url`` (see the module docstring), opened on first use. chDB
    runs one embedded server per process, for one path: opening another path closes the first."""
    import clickhouse_connect

    with _OPEN_LOCK:
        if url in _OPEN:
            return _OPEN[url]
        u = parse_store_url(url)
        if u.scheme == "chdb":
            for other in [k for k, v in _OPEN.items() if v.embedded]:
                _OPEN.pop(other).client.close()
            Path(u.path).mkdir(parents=True, exist_ok=True)
            try:
                client = clickhouse_connect.get_client(interface="chdb", path=u.path)
            except Exception as exc:
                raise StoreError(
                    f"could not open the embedded store at {u.path}: {exc}. chDB allows one "
                    "process per store: if an ingest is using it, wait for it to finish, or "
                    "serve the store from ClickHouse (PROMPTLAKE_STORE_URL=clickhouse://…)"
                ) from exc
            store = Store(client, ClickHouseDialect(), u.database, embedded=True)
        else:
            client = clickhouse_connect.get_client(
                host=u.host,
                port=u.port or 8123,
                username=u.user or "default",
                password=u.password or "",
            )
            dialect = MyScaleDialect() if u.scheme == "myscale" else ClickHouseDialect()
            store = Store(client, dialect, u.database)
        store.url = url
        _OPEN[url] = store
        return store
