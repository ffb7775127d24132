"""Run one task per shard with bounded concurrency, and show progress in the terminal and UI."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from prefect.artifacts import (
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.futures import PrefectFuture, wait
from prefect.task_runners import ProcessPoolTaskRunner, TaskRunner, ThreadPoolTaskRunner
from tqdm.auto import tqdm

from storage.records import ShardStats


@dataclass
class StageResult:
    stage: str
    done: dict[str, ShardStats] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)


def make_runner(kind: str, workers: int) -> TaskRunner:
    """The task runner for shard tasks: threads of this process, or worker processes (each
    with its own GIL, its own HTTP pool and LMDB handle)."""
    if kind == "thread":
        return ThreadPoolTaskRunner(max_workers=workers)
    if kind == "process":
        return ProcessPoolTaskRunner(max_workers=workers)
    raise ValueError(f"unknown runner {kind!r}: use thread or process")


def run_shards(
    stage_task: Any,
    shards: list[str],
    *,
    runner: TaskRunner,
    concurrency: int,
    progress: bool,
    **kwargs: Any,
) -> StageResult:
    """Submit ``stage_task`` once per shard on ``runner`` (entered by the caller), at most
    ``concurrency`` at a time, so that every shard shows as its own task run."""
    result = StageResult(stage_task.name)
    if not shards:
        return result
    artifact = create_progress_artifact(0.0, description=f"{result.stage}: shards done")
    bar = tqdm(total=len(shards), desc=result.stage, unit="shard", disable=not progress)
    pending: set[PrefectFuture] = set()
    names: dict[PrefectFuture, str] = {}
    queue = list(shards)
    while queue or pending:
        while queue and len(pending) < concurrency:
            shard = queue.pop(0)
            fut = runner.submit(stage_task, {"shard": shard, **kwargs})
            names[fut] = shard
            pending.add(fut)
        # Prefect's wait() waits for all; a short timeout turns it into "whichever finished"
        for fut in wait(list(pending), timeout=0.5).done:
            pending.discard(fut)
            _collect(fut, names[fut], result)
            bar.update()  # a disabled bar counts nothing: progress comes from the result
            finished = len(result.done) + len(result.failed)
            update_progress_artifact(artifact, 100.0 * finished / len(shards))
    bar.close()
    return result


def _collect(fut: PrefectFuture, shard: str, result: StageResult) -> None:
    try:
        result.done[shard] = fut.result()
    except Exception as exc:  # the task failed after its retries: the shard is failed
        result.failed[shard] = f"{type(exc).__name__}: {exc}"[:500]


def publish_summary(results: list[StageResult], key: str) -> None:
    """A table artifact: one row per stage and shard."""
    rows = []
    for res in results:
        for shard, st in sorted(res.done.items()):
            rows.append(
                {
                    "stage": res.stage,
                    "shard": shard,
                    "state": "done",
                    "rows": st.rows,
                    "ok": st.ok,
                    "failed": st.failed,
                    "seconds": st.seconds,
                    "by_status": ", ".join(f"{k}={v}" for k, v in sorted(st.by_status.items())),
                }
            )
        for shard, reason in sorted(res.failed.items()):
            rows.append(
                {
                    "stage": res.stage,
                    "shard": shard,
                    "state": "FAILED",
                    "rows": None,
                    "ok": None,
                    "failed": None,
                    "seconds": None,
                    "by_status": reason,
                }
            )
    create_table_artifact(rows, key=key, description="Shards of this run, per stage")
