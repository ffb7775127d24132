"""The store's reads: k-NN search (planned with ``knn`` when filtered), the filter columns'
values (facets), and the searches log the feedback flow reads. A base of ``Store``: it uses the
store's client, dialect, tables and turn."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from promptlake.storage.datadir import diskspace
from promptlake.storage.store import knn
from promptlake.storage.store.dialects import ClickHouseDialect
from promptlake.storage.store.hits import (
    HIT_COLUMNS,
    Facets,
    Filters,
    Hit,
    LoggedSearch,
    StoreError,
    facet_sql,
    hit_from_row,
)
from promptlake.storage.store.schema import TABLES
from promptlake.storage.store.turns import in_turn

log = logging.getLogger("promptlake.store")


class Queries:
    """Search, facets and the searches log of a store (see the module docstring)."""

    dialect: ClickHouseDialect
    knn_tuning = knn.KnnTuning()  # where a filtered search stops scanning (storage/store/knn.py)

    if TYPE_CHECKING:  # what the Store provides (its other bases come later in its MRO)

        @property
        def client(self) -> Any: ...

        def table(self, name: str) -> str: ...

        def _check_table(self, name: str) -> None: ...

        def _writing(self, *, need: int, what: str) -> Any: ...

    @in_turn
    def search(
        self, name: str, vector: list[float], k: int = 10, filters: Filters | None = None
    ) -> list[Hit]:
        """The ``k`` nearest rows of table ``name``; with filters, still ``k`` when ``k`` match:
        the dialect plans how the filter meets the vector index (storage/store/knn.py), and an
        approximate answer that comes back short is redone exactly."""
        self._check_table(name)
        if not 1 <= k <= 10_000:
            raise StoreError(f"k must be between 1 and 10000, got {k}")
        filters = filters or Filters()
        if not filters.active:
            return self._knn(name, vector, k, filters, {})
        plan = self._plan(name, k, filters, len(vector))
        if plan.empty:
            return []
        hits = self._knn(name, vector, k, filters, plan.settings)
        if not plan.exact and len(hits) < k:
            hits = self._knn(name, vector, k, filters, knn.EXACT)
        return hits

    def _plan(self, name: str, k: int, filters: Filters, dim: int) -> knn.KnnPlan:
        """How a search of table ``name`` with ``filters`` runs (storage/store/knn.py)."""
        if not self.dialect.plans_filters:
            return knn.KnnPlan()
        where, params = filters.sql()

        def rows(sql: str) -> list[tuple]:
            return self.client.query(sql, parameters=params).result_rows

        return knn.plan_search(rows, self.table(name), where, k, dim, self.knn_tuning)

    def _knn(
        self, name: str, vector: list[float], k: int, filters: Filters, settings: dict[str, Any]
    ) -> list[Hit]:
        where, params = filters.sql()
        dist = self.dialect.distance(TABLES[name], "{q:Array(Float32)}")
        sql = (
            f"SELECT {HIT_COLUMNS.format(distance=dist)} "
            f"FROM {self.table(name)}{where} ORDER BY distance LIMIT {{k:UInt32}}"
        )
        rows = self.client.query(
            sql, parameters={**params, "q": list(map(float, vector)), "k": k}, settings=settings
        ).result_rows
        return [hit_from_row(r) for r in rows]

    @in_turn
    def facets(self, name: str) -> Facets:
        """The values of table ``name``'s filter columns with their row counts (a few ms per
        field at 900k rows: LowCardinality columns, read whole)."""
        self._check_table(name)
        totals, groups = facet_sql(self.table(name))
        rows, wide, tall = self.client.query(totals).result_rows[0]
        values = {
            field: [(str(v), int(n)) for v, n in self.client.query(sql).result_rows]
            for field, sql in groups.items()
        }
        return Facets(int(rows), values, int(wide or 0), int(tall or 0))

    @in_turn
    def log_search(self, search: LoggedSearch) -> None:
        """Remember a search (the feedback flow looks for poorly served ones). A full disk
        loses the log line, not the search."""
        s = search
        try:
            with self._writing(need=0, what="the search log"):
                self.client.insert(
                    self.table("searches"),
                    [[s.query[:2000], s.kind, s.target, s.k, s.best_distance, s.elapsed_ms]],
                    column_names=["query", "kind", "target", "k", "best_distance", "elapsed_ms"],
                )
        except diskspace.DiskFull as exc:
            log.warning("search not logged: %s", exc)

    @in_turn
    def weak_searches(
        self, *, since_hours: float, min_distance: float, limit: int
    ) -> list[tuple[str, float | None, str]]:
        """Recent text searches for prompts that the store served poorly (its best hit at least
        ``min_distance`` away, or nothing): (query, best distance, last time), newest first."""
        rows = self.client.query(
            f"SELECT query, min(best_distance) AS best, toString(max(at)) AS last "
            f"FROM {self.table('searches')} WHERE target = 'prompts' AND kind = 'text' "
            "AND at >= now64(3) - toIntervalSecond({secs:UInt64}) "
            "GROUP BY query HAVING best IS NULL OR best >= {d:Float64} "
            "ORDER BY last DESC, query LIMIT {n:UInt32}",
            parameters={"secs": int(since_hours * 3600), "d": min_distance, "n": limit},
        ).result_rows
        return [(q, None if b is None else float(b), at) for q, b, at in rows]
