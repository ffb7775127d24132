"""What an ingest says when it ends: its summary (a typed record), the report artifacts and log
lines, and the errors a failed or empty run ends with, each saying what to do."""

from __future__ import annotations

from dataclasses import dataclass, field

from prefect import get_run_logger
from prefect.artifacts import create_markdown_artifact

from promptlake.flows.params import IngestParams
from promptlake.flows.progress import publish_summary
from promptlake.flows.shards import StageResult
from promptlake.storage.datadir.diskspace import DiskFull
from promptlake.storage.datadir.layout import DataDir
from promptlake.storage.datadir.records import PlanManifest, SourceInfo
from promptlake.storage.datadir.status import fetch_notes, shard_ranges


class ShardsFailed(RuntimeError):
    """Some shards failed; the message lists them, why, and how to resume."""

    exit_code = 1


class NoValidRows(ValueError):
    """The source gave no row to ingest; the message says what was rejected and why."""


@dataclass
class IngestSummary:
    source: SourceInfo | None = None
    plan: PlanManifest | None = None
    stages: list[StageResult] = field(default_factory=list)
    index: dict | None = None

    @property
    def failed(self) -> dict[str, dict[str, str]]:
        return {r.stage: r.failed for r in self.stages if r.failed}


def check_rows(plan: PlanManifest, source: SourceInfo) -> None:
    """A source that gave nothing to ingest, in a data dir that holds nothing yet, is an error
    that says why (not an empty run, nor "no embeddings" later)."""
    if plan.shards:
        return
    name = source.source
    if not plan.rows_total:
        raise NoValidRows(
            f"{name}: 0 valid rows — it has no rows (a CSV with only its header, or a folder "
            "without images)"
        )
    why = ", ".join(f"{n:,} {reason}" for reason, n in sorted(plan.rejects_by_reason.items()))
    raise NoValidRows(
        f"{name}: 0 valid rows of {plan.rows_total:,} — rejected: {why}; each rejected row and "
        f"its reason is in plan/generations/{plan.generation:05d}/rejects.parquet of the data dir"
    )


def run_failed(failed: dict[str, dict[str, str]], data: DataDir) -> Exception:
    """The error a run with failed shards ends with: a full disk's own (it says what to do),
    else the failed shards and why."""
    full = [
        why for shards in failed.values() for why in shards.values() if why.startswith("DiskFull")
    ]
    if not full:
        return ShardsFailed(failed_message(failed, data))
    listed = "; ".join(f"{stage} {shard_ranges(sorted(s))}" for stage, s in failed.items())
    return DiskFull(
        f"{full[0].removeprefix('DiskFull: ')}. Failed shards: {listed} (`promptlake status "
        f"--data-dir {data.root}` says why); once there is room, `promptlake resume "
        f"--data-dir {data.root}` carries on."
    )


def failed_message(failed: dict[str, dict[str, str]], data: DataDir) -> str:
    """Which shards failed at which stage, the first reason of each stage, and what to do."""
    parts = []
    for stage, shards in failed.items():
        first = shards[sorted(shards)[0]]
        parts.append(f"{stage} {', '.join(sorted(shards))} ({first[:300]})")
    return (
        f"failed shards: {'; '.join(parts)}. Details: `promptlake status --data-dir "
        f"{data.root}`; after fixing the cause, `promptlake resume --data-dir {data.root}` "
        "reruns only these (finished shards are skipped)."
    )


def report(summary: IngestSummary, params: IngestParams, data: DataDir) -> None:
    """Markdown and table artifacts, and one log line, describing the run."""
    plan = summary.plan
    md = [f"# ingest `{params.source}`", f"data dir: `{data.root}`, until `{params.until}`"]
    if plan:
        md.append(
            f"- rows: {plan.rows_total:,} total, {plan.rows_valid:,} valid, "
            f"{plan.rows_rejected:,} rejected, {len(plan.shards)} shards"
        )
        md += [f"  - rejected `{k}`: {v:,}" for k, v in sorted(plan.rejects_by_reason.items())]
    for res in summary.stages:
        ok = sum(s.ok for s in res.done.values())
        bad = sum(s.failed for s in res.done.values())
        md.append(
            f"- {res.stage}: {len(res.done)} shards done, {len(res.failed)} failed, "
            f"{res.already} done before; rows {ok:,} ok, {bad:,} failed"
        )
        if res.stage == "fetch":  # dead hosts, shards where nothing was fetched: loudly
            md += [f"  - **{note}**" for note in fetch_notes(res.done)]
    if summary.index:
        for name, t in summary.index.get("tables", {}).items():
            md.append(
                f"- index {name}: {summary.index['counts'][name]:,} rows, built in "
                f"{t['seconds']:.1f} s"
            )
    create_markdown_artifact("\n".join(md), key="ingest-report", description="Ingest summary")
    publish_summary(summary.stages, key="ingest-shards")
    get_run_logger().info("\n".join(md))
