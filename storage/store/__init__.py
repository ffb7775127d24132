"""The vector store: prompts and images with their CLIP vectors, in ClickHouse-family databases.

Chosen by URL: ``chdb:///path`` (embedded chDB through clickhouse-connect), or a server,
``clickhouse://user:pass@host:port/db`` or ``myscale://…``. An embedded store admits one process
at a time, so its users take turns (``store.turns``): every method takes the turn for its own
call, and ``Store.turn()`` holds it across several (one unit of work). A server takes no turns:
the same calls go straight to it. Every value reaches SQL as a bound parameter; only identifiers
of our own schema are formatted in.

This package is the ``Store`` and its parts: ``urls`` (which store, shown without a password),
``dialects`` (where ClickHouse and MyScale SQL differ), ``embedded`` (opening chDB, saying why
it failed), ``turns`` and ``turn_files`` (one process at a time on an embedded store), ``schema``
(the tables), ``writes``, ``mutations`` and ``repair`` (writes on a full disk), ``queries`` (k-NN
search, facets, the searches log), ``knn`` (how a filtered k-NN query is planned) and ``hits``
(filters and results). It imports
``storage.datadir`` only for the vector files' model check and the crash tests' named points
(``crashpoints``), and never Prefect.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from typing import Any

import pyarrow as pa

from promptlake.storage.datadir import crashpoints, diskspace
from promptlake.storage.datadir.vectors import ModelMismatch
from promptlake.storage.store import schema
from promptlake.storage.store.dialects import ClickHouseDialect, IndexParams, dialect_for
from promptlake.storage.store.embedded import open_engine, warm_up
from promptlake.storage.store.hits import Filters, Hit, StoreError
from promptlake.storage.store.queries import Queries
from promptlake.storage.store.schema import TABLES
from promptlake.storage.store.turn_files import Say, command_line, say_on_stderr
from promptlake.storage.store.turns import ProcessTurn, in_turn, process_turn
from promptlake.storage.store.urls import parse_store_url
from promptlake.storage.store.writes import WriteGuards

__all__ = ["TABLES", "Filters", "Hit", "Store", "StoreError", "open_store"]


class Store(Queries, WriteGuards):
    """Schema, idempotent per-shard loads and vector indexes here; k-NN search, facets and
    the searches log in ``Queries``."""

    def __init__(
        self,
        url: str,
        dialect: ClickHouseDialect,
        database: str,
        *,
        client: Any = None,
        turn: ProcessTurn | None = None,
    ) -> None:
        self.url, self.dialect, self.db = url, dialect, database
        self._client, self._turn = client, turn
        self._schema: tuple[str, int, int] | None = None

    @property
    def embedded(self) -> bool:
        return self._turn is not None

    @contextlib.contextmanager
    def turn(
        self,
        unit: str = "store",
        *,
        who: str | None = None,
        wait: float = 0.0,
        long: bool = False,
        say: Say = say_on_stderr,
    ) -> Iterator[Store]:
        """Hold an embedded store for one unit of work, waiting up to ``wait`` seconds for
        this process's turn (then StoreBusy, naming the holder); ``who`` (default: the command
        line) and ``unit`` tell waiting processes who holds it and why, ``long`` that it may
        take minutes. Reentrant and thread-safe. A server store takes no turns."""
        if self._turn is None:
            yield self
            return
        with self._turn.unit(who=who or command_line(), unit=unit, wait=wait, long=long, say=say):
            yield self

    @property
    def client(self) -> Any:
        """The database client. Embedded: the engine of this process's turn, which outlives a
        unit of work only until another process waits: use it inside ``turn()``."""
        if self._turn is None:
            return self._client
        with self.turn("client"):
            return self._turn.client

    def table(self, name: str) -> str:
        return f"{self.db}.{name}"

    @in_turn
    def ensure_schema(self, model: str, dim: int) -> None:
        """Create the tables for vectors of ``model`` (``dim`` long); refuse another model's.
        A store whose schema matches gets no DDL at all (each DDL rewrites a metadata file,
        which a full disk can leave empty)."""
        if dim < 1:
            raise StoreError(f"vector dimension must be >= 1, got {dim}")
        opened = self._turn.generation if self._turn else 0
        if self._schema == (model, dim, opened):
            return  # checked on this connection already: no round trips per shard
        rows = self.client.query(schema.COLUMNS_SQL, parameters={"db": self.db}).result_rows
        have = {table: set(names) for table, names in rows}
        meta = self.meta() if "meta" in have else {}
        if meta and (meta.get("model"), meta.get("dim")) != (model, str(dim)):
            raise ModelMismatch(
                f"the store holds vectors of {meta.get('model')} (dim "
                f"{meta.get('dim')}), not of {model} (dim {dim})"
            )
        ddl = schema.missing_ddl(self.db, have, dim)
        if not have and not self._database_exists():
            ddl.insert(0, f"CREATE DATABASE IF NOT EXISTS {self.db}")
        with self._writing(need=diskspace.MB if ddl or not meta else 0, what="the store's schema"):
            for sql in ddl:
                self.client.command(sql)
            if not meta:
                self.client.insert(
                    self.table("meta"),
                    [["model", model], ["dim", str(dim)]],
                    column_names=["key", "value"],
                )
        if ddl:
            self._snapshot()
        self._schema = (model, dim, opened)

    @in_turn
    def meta(self) -> dict[str, str]:
        rows = self.client.query(f"SELECT key, value FROM {self.table('meta')} FINAL").result_rows
        return dict(rows)

    @in_turn
    def load_shard(self, name: str, shard: str, rows: pa.Table) -> int:
        """Replace ``shard``'s rows of table ``name`` with ``rows``: loading twice never
        duplicates (delete, then one Arrow insert)."""
        self._check_table(name)
        where = f"FROM {self.table(name)} WHERE shard = {{shard:String}}"
        present = self.client.query(f"SELECT count() {where}", parameters={"shard": shard})
        again = bool(present.result_rows[0][0])  # a DELETE is a mutation: none for a first load
        # the insert reserves about its uncompressed size; a DELETE rewrites a part
        need = rows.nbytes + diskspace.MB + (self._parts(name)[0] if again else 0)
        with self._writing(need=need, what=f"load shard {shard} ({name})"):
            if again:
                self.delete_shard(name, shard)
                crashpoints.reached(f"store:{name}:delete")
            if rows.num_rows:
                self.client.insert_arrow(self.table(name), rows)
                crashpoints.reached(f"store:{name}:insert")
        return rows.num_rows

    @in_turn
    def delete_shard(self, name: str, shard: str) -> None:
        """Delete ``shard``'s rows of table ``name`` (waiting for it in short polls, never
        forever: ``storage.store.mutations``)."""
        self._check_table(name)
        self._delete(name, "shard = {shard:String}", {"shard": shard}, f"delete shard {shard}")

    @in_turn
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
        where = (
            "origin = 'dataset' AND (NOT has({keep:Array(String)}, shard) OR "
            "has({keys:Array(String)}, concat(shard, '/', id)))"
        )
        for start in range(0, max(len(retired), 1), 10_000):  # bounded statement size
            keys = [f"{shard}/{rid}" for shard, rid in retired[start : start + 10_000]]
            params = {"keep": keep_shards, "keys": keys}
            found = self.client.query(
                f"SELECT count() FROM {self.table(name)} WHERE {where}", parameters=params
            ).result_rows[0][0]
            if found:
                with self._writing(need=self._parts(name)[0], what=f"reconcile {name}"):
                    self._delete(name, where, params, f"reconcile {name}")
                crashpoints.reached(f"store:{name}:drop")
                gone += int(found)
        return gone

    @in_turn
    def count(self, name: str) -> int:
        self._check_table(name)
        return int(self.client.query(f"SELECT count() FROM {self.table(name)}").result_rows[0][0])

    @in_turn
    def index_status(self, name: str) -> list[tuple]:
        """The vector index of table ``name`` as the engine reports it (none: not declared)."""
        self._check_table(name)
        where = {"db": self.db, "table": name}
        return self.client.query(self.dialect.index_status(), parameters=where).result_rows

    @in_turn
    def build_index(self, name: str, dim: int, params: IndexParams) -> list[tuple]:
        """Build the vector index of table ``name`` after the bulk load; return its status.
        The first build merges the table's parts into one first: one graph to search instead
        of one per part, and no background merge rebuilding the index later. A later build
        (after more loads) keeps the parts: their new rows were indexed as they came."""
        declared = bool(self.index_status(name))
        # OPTIMIZE FINAL rewrites every part; the HNSW graph takes ~dim × 2 bytes a row (bf16)
        index_bytes = self.count(name) * (dim * 2 + 64)
        need = index_bytes + (0 if declared else self._parts(name)[1])
        with self._writing(need=need, what=f"the {name} index"):
            if not declared:  # its DDL only when missing: each DDL rewrites the table's .sql
                self.client.command(
                    f"OPTIMIZE TABLE {self.table(name)} FINAL "
                    "SETTINGS optimize_skip_merged_partitions = 1"  # one part already: no rewrite
                )
                crashpoints.reached(f"store:{name}:optimize")
                for sql in self.dialect.add_index(self.table(name), TABLES[name], dim, params):
                    self.client.command(sql)
                    crashpoints.reached(f"store:{name}:index")
                self._snapshot()
            materialize = self.dialect.materialize_index(self.table(name), TABLES[name])
            if materialize:
                self.client.command(materialize)
                self._wait_for_mutations(name, f"the {name} index")
                crashpoints.reached(f"store:{name}:index")
        return self.index_status(name)

    def _check_table(self, name: str) -> None:
        if name not in TABLES:
            raise StoreError(f"unknown table {name!r}: use prompts or images")

    def close(self) -> None:
        """Give the store back: an embedded one to the next process (after the units in
        progress in this process), a server's connection closed."""
        if self._turn is not None:
            self._turn.hand_back()
            return
        with _OPEN_LOCK:
            _OPEN.pop(self.url, None)
        self._client.close()


_OPEN: dict[str, Store] = {}
_OPEN_LOCK = threading.Lock()


def open_store(url: str) -> Store:
    """The process's store for ``url`` (see the module docstring). Embedded: a handle that
    opens the engine when it takes its turn; a server: a connection, opened on first use."""
    import clickhouse_connect

    with _OPEN_LOCK:
        if url in _OPEN:
            return _OPEN[url]
        u = parse_store_url(url)
        if u.scheme == "chdb":
            path = os.path.realpath(u.path)  # chDB compares engine paths as strings
            turn = process_turn(path, open_engine, warm_up)
            store = Store(url, dialect_for(u.scheme), u.database, turn=turn)
        else:
            client = clickhouse_connect.get_client(
                host=u.host,
                port=u.port or 8123,
                username=u.user or "default",
                password=u.password or "",
            )
            store = Store(url, dialect_for(u.scheme), u.database, client=client)
        _OPEN[url] = store
        return store
