"""How a filtered k-NN query runs on ClickHouse's vector index (chDB included).

The HNSW index post-filters: each part's index returns its nearest rows and the WHERE clause
drops those that do not match, so a filter keeping 1% of the rows keeps ~1% of the candidates.
And when the sort key narrows a filter to some granules of a part, the engine skips that part's
index and scans those granules exactly, whatever ``vector_search_filter_strategy`` says: fast for
a selective filter, slow for a broad one (a quarter of 900k rows: ~120 ms). So a filtered search
first asks the engine what its filter keeps — the sort key's estimate of the rows an exact scan
reads (``EXPLAIN ESTIMATE``, ~1 ms), then, unless that settles it, a count — and runs the
cheaper of:

- an exact scan: its cost grows with the vector values it reads (the sort key's granules, or
  one granule per match at most: the scan skips granules without one);
- the index, with the primary key switched off so that the engine does not scan instead,
  fetching about twice as many candidates per part as the filter's share needs to keep k of
  them (``vector_search_index_fetch_multiplier``, the engine's cap on candidates raised to
  match): its cost grows with those candidates.

A post-filtered answer that still comes back short is redone exactly by the store: k rows
whenever k rows match. The costs are measured in benchmarks/search.py.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

EXACT = {"use_skip_indexes": 0}
ENGINE_MAX_MULTIPLIER = 1000  # vector_search_index_fetch_multiplier's upper bound
ENGINE_CANDIDATE_CAP = 1000  # max_limit_for_vector_search_queries' default


@dataclass(frozen=True)
class KnnTuning:
    """The two costs in vector values (rows x dimensions) an exact scan reads in the same time:
    an index search costs ``index_values`` plus ``candidate_values`` per candidate it fetches
    (measured at 900k 512-d rows on two cores: ~6k rows, plus ~9 per candidate). The index
    fetches ``safety`` times the candidates a filter's share needs on average; past
    ``max_candidates`` per part (a large k with a narrow filter) the scan is taken."""

    index_values: int = 3_000_000
    candidate_values: int = 4_500
    safety: float = 2.0
    max_candidates: int = 20_000


@dataclass(frozen=True)
class FilterShape:
    """What the sort key leaves of a table under a filter: the ``scan_rows`` rows, in ``marks``
    granules, that an exact scan would read."""

    scan_rows: int
    marks: int


@dataclass(frozen=True)
class KnnPlan:
    """How one filtered k-NN query runs: its engine settings, whether its answer is exact, and
    whether it can skip the query (no row matches)."""

    settings: dict[str, Any] = field(default_factory=dict)
    exact: bool = False
    empty: bool = False


def plan(
    shape: FilterShape,
    k: int,
    dim: int,
    count: Callable[[], tuple[int, int]],
    tuning: KnnTuning = KnnTuning(),
) -> KnnPlan:
    """The plan for a filter of ``shape``; ``count`` gives (rows in the table, rows that match)
    and is called only when the estimate does not decide."""
    if shape.scan_rows * dim <= tuning.index_values:
        return KnnPlan(EXACT, exact=True)  # cheaper than any index search
    total, matches = count()
    if matches == 0:
        return KnnPlan(exact=True, empty=True)
    multiplier = math.ceil(tuning.safety * total / matches)
    candidates = k * multiplier
    per_granule = shape.scan_rows / max(shape.marks, 1)
    scan = min(shape.scan_rows, matches * per_granule) * dim
    if (
        multiplier > ENGINE_MAX_MULTIPLIER
        or candidates > tuning.max_candidates
        or scan <= tuning.index_values + tuning.candidate_values * candidates
    ):
        return KnnPlan(EXACT, exact=True)
    settings = {
        "use_primary_key": 0,  # else a filter on the sort key turns the search into a scan
        "vector_search_filter_strategy": "postfilter",
        "vector_search_index_fetch_multiplier": multiplier,
        "max_limit_for_vector_search_queries": max(ENGINE_CANDIDATE_CAP, candidates),
    }
    return KnnPlan(settings)


def plan_search(
    rows: Callable[[str], list[tuple]],
    table: str,
    where: str,
    k: int,
    dim: int,
    tuning: KnnTuning = KnnTuning(),
) -> KnnPlan:
    """The plan for a k-NN search of ``table`` filtered by ``where``, from what the engine says
    of it; ``rows`` runs a query with the filter's values bound."""
    estimate = rows(f"EXPLAIN ESTIMATE SELECT 1 FROM {table}{where}")  # db, table, parts,
    scan_rows, marks = (sum(int(r[i]) for r in estimate) for i in (3, 4))  # rows, marks

    def count() -> tuple[int, int]:
        sql = f"SELECT (SELECT count() FROM {table}), count() FROM {table}{where}"
        total, matches = rows(sql)[0]
        return int(total), int(matches)

    return plan(FilterShape(scan_rows, marks), k, dim, count, tuning)
