"""The data dir's disk as the stages see it: the free-space check before a shard's writes, and
which errors Prefect must not retry (a full disk stays full: a retry only reaches the store's
DELETE again). No Prefect at import time."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from promptlake.settings import Settings, min_free_bytes
from promptlake.storage.datadir import diskspace
from promptlake.storage.datadir.layout import DataDir


def check_space(data: DataDir, settings: Settings, *, need: int, what: str) -> None:
    """Refuse ``what`` (DiskFull, saying what to do) when the data dir's disk lacks ``need``
    bytes plus the floor (``PROMPTLAKE_MIN_FREE_MB``)."""
    floor = min_free_bytes(settings)
    diskspace.check(data.root, need=need, floor=floor, what=what, data_root=data.root)


def not_retried(*permanent: type[BaseException]) -> Callable[[Any, Any, Any], bool]:
    """A Prefect ``retry_condition_fn``: retry a failed task run unless it raised one of
    ``permanent`` (a full disk always is)."""
    never: tuple[type[BaseException], ...] = (diskspace.DiskFull, *permanent)

    def worth_retrying(task: Any, task_run: Any, state: Any) -> bool:
        try:
            state.result()
        except never:
            return False
        except Exception:
            return True
        return True

    return worth_retrying


def prepare(data: DataDir, settings: Settings) -> None:
    """Before a run writes anything to ``data``: the floor must be free (DiskFull, saying what
    to do), and the ballast that lets failure records in on a full disk is made."""
    check_space(data, settings, need=0, what="an ingest (its source, plan and records)")
    diskspace.make_reserve(data.root / "state", floor=min_free_bytes(settings))
