"""Typed records passed between stages."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

REQUIRED_COLUMNS = ("id", "prompt", "url", "width", "height", "source_site")
STAGES = ("download", "plan", "fetch", "embed", "load", "index")
SHARDED_STAGES = ("fetch", "embed", "load")


def shard_name(index: int) -> str:
    """The zero-padded name of shard number ``index``."""
    if index < 0:
        raise ValueError(f"shard index must be >= 0, got {index}")
    return f"{index:05d}"


@dataclass(frozen=True)
class SourceInfo:
    """Where the dataset came from and what was read."""

    source: str
    path: str
    size: int
    sha256: str
    fmt: str


@dataclass
class ShardStats:
    """What one stage did to one shard; written as the shard's completion marker."""

    stage: str
    shard: str
    rows: int = 0
    ok: int = 0
    failed: int = 0
    skipped: int = 0
    by_status: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)
    # the files the stage wrote and read, by path relative to the data dir, with their size,
    # mtime_ns and sha256 (``storage.datadir.markers``); empty in markers written before
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    inputs: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ShardStats:
        return cls(**{k: v for k, v in data.items() if k in _SHARD_STATS_FIELDS})


_SHARD_STATS_FIELDS = frozenset(f.name for f in dataclasses.fields(ShardStats))


@dataclass(frozen=True)
class ShardRef:
    """One planned shard: its name, the rows in its file, and how many of those later plans
    retired (changed or removed in the source)."""

    name: str
    rows: int
    retired: int = 0

    @property
    def live(self) -> int:
        return self.rows - self.retired


@dataclass(frozen=True)
class PlanGeneration:
    """One planning of the source: what changed since the previous one."""

    number: int
    source_sha256: str
    planned_at: float
    rows_total: int
    added: int
    changed: int
    removed: int
    unchanged: int
    shards: list[str]


@dataclass
class PlanManifest:
    """The result of the plan stage: how the source was split, generation after generation.
    The row counts describe the source as it is now; ``shards`` holds every shard ever planned
    (names are stable), with the rows later generations retired from each. The manifest is
    the plan's one commit: ``generation`` names the folder holding its row index, retired rows
    and rejects (0: a plan made before those had folders, its files directly in ``plan/``)."""

    source_sha256: str
    shard_size: int
    limit: int | None
    rows_total: int
    rows_valid: int
    rows_rejected: int
    rejects_by_reason: dict[str, int]
    shards: list[ShardRef]
    generations: list[PlanGeneration] = field(default_factory=list)
    generation: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PlanManifest:
        shards = [ShardRef(**s) for s in data["shards"]]
        gens = [PlanGeneration(**g) for g in data.get("generations", [])]
        return cls(**{**data, "shards": shards, "generations": gens})


# Fetch statuses that another try cannot change: --retry-failed leaves them alone.
PERMANENT_FETCH = frozenset({"invalid_url"})
# What a person can do about a fetch status, where that is known: status and the run report say it.
FETCH_FIXES = {
    "blocked_scheme": "file:// URLs are refused: rerun the ingest with --allow-file-urls "
    "--retry-failed (PROMPTLAKE_ALLOW_FILE_URLS=1)",
    "host_down": "the host stopped answering: rerun with --retry-failed once it is back",
    "invalid_url": "these URLs cannot be fetched: fix the url column and ingest again",
    "timeout": "slow hosts: raise PROMPTLAKE_READ_TIMEOUT, then rerun with --retry-failed",
    "connection_error": "unreachable hosts: rerun with --retry-failed once they answer",
    "dns_error": "host names did not resolve: check this machine's DNS, then rerun with "
    "--retry-failed",
}


@dataclass
class FetchRecord:
    """The outcome of fetching one row's image."""

    id: str
    url: str
    status: str
    http_status: int | None = None
    error: str = ""
    bytes: int = 0
    orig_width: int | None = None
    orig_height: int | None = None
    width: int | None = None
    height: int | None = None
    sha256: str = ""
    attempts: int = 0
    elapsed_ms: float = 0.0
    image_sha256: str = ""  # of the cached (resized, re-encoded) image: a damaged one is found

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def version(self) -> str:
        """Names this version of the row's image (its source bytes' hash): what a link to the
        cached picture carries, so a browser never shows a changed row's old one."""
        return self.sha256[:16]

    def to_dict(self) -> dict[str, Any]:
        # flat fields: a plain copy, several times cheaper than dataclasses.asdict per image
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FetchRecord:
        return cls(**{k: v for k, v in data.items() if k in _FETCH_RECORD_FIELDS})


_FETCH_RECORD_FIELDS = frozenset(f.name for f in dataclasses.fields(FetchRecord))
