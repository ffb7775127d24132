"""What a run shows while it runs and when it ends: each stage's result record, its progress
artifact in the Prefect UI, and the summary table of the run's shards."""

from __future__ import annotations

import heapq
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from prefect.artifacts import (
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)

from promptlake.storage.datadir.records import ShardStats

SLOWEST = 3  # slowest shards the summary lists per stage
FAILED_LISTED = 20  # failed shards it lists per stage (status lists them all)


@dataclass
class StageResult:
    stage: str
    done: dict[str, ShardStats] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    already: int = 0  # shards this stage had finished before the run: no task run made for them


class Progress:
    """A stage's progress artifact in the Prefect UI, sent again only when its whole percent
    moves: at most ~100 API calls per stage, however many shards (each call is a round trip
    that holds up the run loop)."""

    def __init__(self, stage: str, total: int) -> None:
        self.stage, self.total, self.shown = stage, total, 0
        # a key (one per stage) lists it on the UI's Artifacts page, each run a new version
        made = create_progress_artifact(0.0, key=f"{stage}-progress", description=self._say(0))
        assert isinstance(made, UUID)  # called from a sync flow: the sync form answers
        self.id = made

    def _say(self, finished: int) -> str:
        percent = 100 * finished // self.total
        return f"{self.stage}: {finished:,} of {self.total:,} shards finished ({percent}%)"

    def show(self, finished: int) -> None:
        percent = 100 * finished // self.total
        if percent > self.shown:  # 100 once all are finished
            update_progress_artifact(
                self.id, 100.0 * finished / self.total, description=self._say(finished)
            )
            self.shown = percent


def publish_summary(results: list[StageResult], key: str) -> None:
    """A table artifact that stays readable at any shard count: per stage one row of totals,
    then its failed shards (the first ``FAILED_LISTED``) and its ``SLOWEST`` slowest shards."""
    rows = []
    for res in results:
        rows.append(_totals(res))
        failed = sorted(res.failed.items())
        rows += [
            _row(res.stage, "failed", shard, detail=why) for shard, why in failed[:FAILED_LISTED]
        ]
        if len(failed) > FAILED_LISTED:
            more = f"{len(failed) - FAILED_LISTED} more failed shards: see `promptlake status`"
            rows.append(_row(res.stage, "failed", "…", detail=more))
        for st in heapq.nlargest(SLOWEST, res.done.values(), key=lambda st: st.seconds):
            rows.append(_row(res.stage, "slowest", st.shard, st, detail=_counts(st.by_status)))
    create_table_artifact(
        rows, key=key, description="Shards of this run: totals per stage, failed and slowest shards"
    )


def _totals(res: StageResult) -> dict[str, Any]:
    done = res.done.values()
    total = ShardStats(
        res.stage,
        "",
        rows=sum(st.rows for st in done),
        ok=sum(st.ok for st in done),
        failed=sum(st.failed for st in done),
        seconds=sum(st.seconds for st in done),
    )
    by_status: Counter[str] = Counter()
    for st in done:
        by_status.update(st.by_status)
    shards = f"{len(res.done)} done" + (f", {len(res.failed)} failed" if res.failed else "")
    shards += f", {res.already} done before" if res.already else ""
    return _row(res.stage, "total", shards, total, detail=_counts(by_status))


def _row(
    stage: str, kind: str, shards: str, st: ShardStats | None = None, *, detail: str = ""
) -> dict[str, Any]:
    """One row of the summary table (the same columns in every row)."""
    return {
        "stage": stage,
        "row": kind,
        "shards": shards,
        "rows": st.rows if st else None,
        "ok": st.ok if st else None,
        "failed": st.failed if st else None,
        "seconds": round(st.seconds, 1) if st else None,
        "detail": detail,
    }


def _counts(by_status: dict[str, int]) -> str:
    return ", ".join(f"{k}={v:,}" for k, v in sorted(by_status.items()))
