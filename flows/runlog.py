"""What a run's log says per shard: one line with its counts when it finishes, instead of
Prefect's "Finished in state Completed()" for every task run (3,600 lines at 900 shards that
say nothing). Failed and retried task runs are still logged by Prefect as before."""

from __future__ import annotations

import logging

from prefect import get_run_logger
from prefect.exceptions import MissingContextError

from promptlake.storage.datadir.records import ShardStats

_TASK_RUNS = logging.getLogger("prefect.task_runs")


class QuietCompletions(logging.Filter):
    """Drops the task engine's line for a completed task run (its shard's own line says more)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.INFO or not isinstance(record.msg, str):
            return True
        return not record.msg.startswith("Finished in state Completed")


def quiet_completions() -> None:
    """Install ``QuietCompletions`` in this process (a flow's, or a worker's), once."""
    if not any(isinstance(f, QuietCompletions) for f in _TASK_RUNS.filters):
        _TASK_RUNS.addFilter(QuietCompletions())


def shard_line(st: ShardStats) -> str:
    """``fetch 00012: 1,000 rows, 980 ok, 20 failed (not_found=12, timeout=8) in 3.2 s``."""
    line = f"{st.stage} {st.shard}: {st.rows:,} rows, {st.ok:,} ok"
    if st.failed:
        line += f", {st.failed:,} failed"
    if st.skipped:
        line += f", {st.skipped:,} skipped"
    others = {k: v for k, v in st.by_status.items() if k != "ok" and v}
    if others:
        line += " (" + ", ".join(f"{k}={v:,}" for k, v in sorted(others.items())) + ")"
    return f"{line} in {st.seconds:.1f} s"


def shard_done(st: ShardStats) -> None:
    """The run log's line for a finished shard: its counts."""
    _logger().info(shard_line(st))


def shard_failed(stage: str, shard: str, why: str) -> None:
    """The run log's line for a shard that failed its stage (after its retries)."""
    _logger().warning(f"{stage} {shard} failed: {why}")


def _logger() -> logging.Logger | logging.LoggerAdapter:
    try:
        return get_run_logger()
    except MissingContextError:  # outside a flow run (a test calling the pipeline directly)
        return logging.getLogger("promptlake.shards")
