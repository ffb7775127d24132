"""Completion markers (``state/<stage>/<shard>.json``) and failure records beside them.

Markers are the durable record of progress: a shard with a marker is done, whatever Prefect's
database says. A shard whose run raised gets ``<shard>.error.json`` instead, cleared on success.
"""

from __future__ import annotations

import os
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from promptlake.storage.datadir.layout import DataDir, read_json, write_json
from promptlake.storage.datadir.records import ShardStats


class Markers:
    """Markers of one stage in one data directory."""

    def __init__(self, data: DataDir, stage: str) -> None:
        self.stage = stage
        self.dir = data.state_dir(stage)

    def path(self, shard: str) -> Path:
        return self.dir / f"{shard}.json"

    def error_path(self, shard: str) -> Path:
        return self.dir / f"{shard}.error.json"

    def done(self, shard: str) -> bool:
        return self.path(shard).exists()

    def read(self, shard: str) -> ShardStats | None:
        path = self.path(shard)
        return ShardStats.from_dict(read_json(path)) if path.exists() else None

    def write(self, stats: ShardStats) -> None:
        """Mark ``stats.shard`` done; called only after the shard's output is in place."""
        write_json(self.path(stats.shard), {**stats.to_dict(), "finished_at": time.time()})
        self.error_path(stats.shard).unlink(missing_ok=True)

    def record_failure(self, shard: str, exc: BaseException) -> None:
        """Remember why a shard failed, so ``status`` and ``resume`` can say it."""
        detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        write_json(self.error_path(shard), {"shard": shard, "error": detail, "at": time.time()})

    @contextmanager
    def recording(self, shard: str) -> Iterator[None]:
        """Record an exception raised inside as the shard's failure, then re-raise it."""
        try:
            yield
        except Exception as exc:
            self.record_failure(shard, exc)
            raise

    def all_done(self) -> dict[str, ShardStats]:
        """Every marked shard's stats, by shard name (one read of each marker file)."""
        return {name: ShardStats.from_dict(read_json(path)) for name, path in self._files(".json")}

    def names(self) -> set[str]:
        """The marked shards' names: one listing of the folder, no marker read."""
        return {name for name, _ in self._files(".json")}

    def failures(self) -> dict[str, str]:
        """Why each failed shard failed, by shard name."""
        return {name: read_json(path).get("error", "") for name, path in self._files(".error.json")}

    def _files(self, suffix: str) -> list[tuple[str, Path]]:
        """(shard, path) of this stage's files ending in ``suffix``, in shard order: one listing
        of the folder (status reads thousands of markers; pathlib's glob costs more than the
        reads)."""
        try:
            entries = os.scandir(self.dir)
        except FileNotFoundError:
            return []
        with entries:
            found = [(e.name, Path(e.path)) for e in entries if e.name.endswith(suffix)]
        if suffix == ".json":  # a failure record is not a marker
            found = [(n, p) for n, p in found if not n.endswith(".error.json")]
        return sorted((n.removesuffix(suffix), p) for n, p in found)
