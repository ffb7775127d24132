"""How a filtered k-NN query runs on ClickHouse's vector index (chDB included).

The HNSW index post-filters: each part's index returns its nearest rows and the WHERE clause
drops those that do not match, so a filter keeping 1% of the rows keeps ~1% of the candidates.
And when the sort key narrows a filter to some granules of a part, the engine skips that part's
index and scans those granules exactly, whatever ``vector_search_filter_strategy`` says: fast for
a selective filter, slow for a broad one (a quarter of 900k rows: ~120 ms). So a filtered search
first asks the engine what its filter keeps — the sort key's estimate of the rows an exact scan
reads (``EXPLAIN ESTIMATE``, ~1 ms), then, unless that settles it, a count — and picks:

- exact, when the scan is small: a selective filter on the sort key, or a handful of matches
  (each lies in one granule, and the scan skips granules without one);
- the index, with the primary key switched off so the engine does not scan instead, fetching
  about twice as many candidates per part as the filter's share needs to keep k of them
  (``vector_search_index_fetch_multiplier``), the engine's cap on candidates raised to match.

A post-filtered answer that still comes back short is redone exactly by the store: k rows
whenever k rows match. Measured in benchmarks/search.py.
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
    """Where the exact scan stops paying: ``exact_scan_values`` vector values (rows x
    dimensions) scan in about the time the index takes with a filter's extra candidates (20M:
    40k rows of 512-d, ~10 ms on two cores); ``safety`` is how many times the candidates a
    filter's share needs on average the index fetches; past ``max_candidates`` per part (a
    large k with a narrow filter) the exact scan wins."""

    exact_scan_values: int = 20_000_000
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
    if shape.scan_rows * dim <= tuning.exact_scan_values:
        return KnnPlan(EXACT, exact=True)
    total, matches = count()
    if matches == 0:
        return KnnPlan(exact=True, empty=True)
    per_granule = shape.scan_rows / max(shape.marks, 1)
    if min(shape.scan_rows, matches * per_granule) * dim <= tuning.exact_scan_values:
        return KnnPlan(EXACT, exact=True)  # few matches, scattered: one granule each at most
    multiplier = math.ceil(tuning.safety * total / matches)
    if multiplier > ENGINE_MAX_MULTIPLIER or k * multiplier > tuning.max_candidates:
        return KnnPlan(EXACT, exact=True)
    settings = {
        "use_primary_key": 0,  # else a filter on the sort key turns the search into a scan
        "vector_search_filter_strategy": "postfilter",
        "vector_search_index_fetch_multiplier": multiplier,
        "max_limit_for_vector_search_queries": max(ENGINE_CANDIDATE_CAP, k * multiplier),
    }
    return KnnPlan(settings)
