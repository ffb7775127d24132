"""Search requests' filters and results: typed records shared by the store and its callers."""

from __future__ import annotations

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
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Filters:
    """Search filters; each becomes a bound parameter."""

    source_site: str | None = None
    min_width: int | None = None
    min_height: int | None = None
    origin: str | None = None

    def sql(self) -> tuple[str, dict[str, Any]]:
        clauses, params = [], {}
        for name, op, typ in (
            ("source_site", "=", "String"),
            ("origin", "=", "String"),
            ("min_width", ">=", "UInt32"),
            ("min_height", ">=", "UInt32"),
        ):
            value = getattr(self, name)
            if value is None:
                continue
            if typ == "UInt32" and (not isinstance(value, int) or value < 0):
                raise StoreError(f"{name} must be a whole number >= 0, got {value!r}")
            column = name.removeprefix("min_")
            clauses.append(f"{column} {op} {{{name}:{typ}}}")
            params[name] = value
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", params

    @property
    def active(self) -> bool:
        return any(
            v is not None for v in (self.source_site, self.min_width, self.min_height, self.origin)
        )


def lineage(origin: str, parents: list[str], trigger: str, created: str) -> dict[str, Any]:
    """Where a row came from, for rows the store made itself (feedback)."""
    if origin == "dataset":
        return {}
    return {"parent_ids": list(parents), "trigger": trigger, "created_at": created}


class StoreBusy(StoreError):
    """Another process held the embedded store for longer than this one may wait; the message
    names the holder and what to do."""


class StoreUnavailable(StoreError):
    """The embedded store cannot be opened; the message gives the real cause."""
