"""Search requests' filters and results: typed records shared by the store and its callers."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any


class StoreError(ValueError):
    """A bad store URL or request; the message names the bad value."""


@dataclass
class Hit:
    """One search result."""

    id: str
    prompt: str
    url: str
    distance: float
    source_site: str = ""
    width: int = 0
    height: int = 0
    origin: str = ""
    # how the image was made, when the source says: its generator's own words
    negative_prompt: str = ""
    model_name: str = ""
    tool: str = ""
    settings: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)  # lineage; the source's other columns


# the store's columns a hit is read from, in the order ``hit_from_row`` takes them
HIT_COLUMNS = (
    "id, prompt, url, {distance} AS distance, source_site, width, height, origin, "
    "negative_prompt, model_name, tool, settings, extra, parent_ids, trigger, "
    "toString(created_at)"
)


def hit_from_row(row: tuple) -> Hit:
    """A hit from a row selected with ``HIT_COLUMNS``."""
    rid, prompt, url, distance, site, width, height, origin = row[:8]
    negative, model, tool, settings, columns = row[8:13]
    extra = lineage(origin, *row[13:16])
    if columns and columns != "{}":
        extra["columns"] = _object(columns)
    return Hit(
        rid, prompt, url, float(distance), site, width, height, origin,
        negative, model, tool, _object(settings), extra,
    )  # fmt: skip


def _object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text) if text else {}
    except ValueError:
        return {"text": text}
    return value if isinstance(value, dict) else {"value": value}


# filter name → SQL (its value always a bound parameter)
_FILTERS = {
    "source_site": "source_site = {source_site:String}",
    "origin": "origin = {origin:String}",
    "min_width": "width >= {min_width:UInt32}",
    "min_height": "height >= {min_height:UInt32}",
    "model_name": "positionCaseInsensitiveUTF8(model_name, {model_name:String}) > 0",
    "tool": "tool = {tool:String}",
}


@dataclass(frozen=True)
class Filters:
    """Search filters; each becomes a bound parameter. ``model_name`` matches every model whose
    name contains it, ignoring case ("xl" finds "sd_xl_base_1.0" and "SDXL-Turbo")."""

    source_site: str | None = None
    min_width: int | None = None
    min_height: int | None = None
    origin: str | None = None
    model_name: str | None = None
    tool: str | None = None

    @classmethod
    def of(cls, holder: Any) -> Filters:
        """The filters ``holder`` carries as attributes of the same names (a flow's parameters,
        a search page's query)."""
        return cls(**{name: getattr(holder, name) for name in _FILTERS})

    def sql(self) -> tuple[str, dict[str, Any]]:
        clauses, params = [], {}
        for name, clause in _FILTERS.items():
            value = getattr(self, name)
            if value is None:
                continue
            if name.startswith("min_") and (not isinstance(value, int) or value < 0):
                raise StoreError(f"{name} must be a whole number >= 0, got {value!r}")
            clauses.append(clause)
            params[name] = value
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", params

    @property
    def active(self) -> bool:
        return any(getattr(self, name) is not None for name in _FILTERS)


def lineage(origin: str, parents: list[str], trigger: str, created: str) -> dict[str, Any]:
    """Where a row came from, for rows the store made itself (feedback)."""
    if origin == "dataset":
        return {}
    return {"parent_ids": list(parents), "trigger": trigger, "created_at": created}


@dataclass(frozen=True)
class LoggedSearch:
    """One search as the searches log keeps it: what was asked (a text, or an image's path or
    URL), with what (``text``, ``image`` or ``text+image``), and how well the store served it."""

    query: str
    kind: str
    target: str
    k: int
    best_distance: float | None
    elapsed_ms: float


class StoreBusy(StoreError):
    """Another process held the embedded store for longer than this one may wait; the message
    names the holder and what to do."""


class StoreUnavailable(StoreError):
    """The embedded store cannot be opened; the message gives the real cause."""


FACET_FIELDS = ("source_site", "origin", "model_name", "tool")
FACET_LIMIT = 200  # values per field: a page's list, not a census


@dataclass(frozen=True)
class Facets:
    """What a table holds, for offering its filters: each field's values with their row counts
    (most first, at most ``FACET_LIMIT``), and the widest and tallest original images."""

    rows: int
    values: dict[str, list[tuple[str, int]]]
    max_width: int
    max_height: int


def facet_sql(table: str) -> tuple[str, dict[str, str]]:
    """The queries behind :class:`Facets`: the totals, then one GROUP BY per field."""
    totals = f"SELECT count(), max(width), max(height) FROM {table}"
    groups = {
        name: f"SELECT {name} AS v, count() AS n FROM {table} GROUP BY v "
        f"ORDER BY n DESC, v LIMIT {FACET_LIMIT}"
        for name in FACET_FIELDS
    }
    return totals, groups


class NoEmbeddings(StoreUnavailable):
    """A data dir has no embeddings to search (yet, or while it is being re-planned)."""
