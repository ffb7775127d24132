"""The ingest flow: download → plan → fetch (one task per shard), ending Failed on failed shards."""

from __future__ import annotations

from dataclasses import dataclass, field

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from flows.params import IngestParams
from flows.shards import StageResult, make_runner, publish_summary, run_shards
from promptlake.settings import Settings, get_settings
from storage.records import PlanManifest, SourceInfo
from tasks.download import download_task
from tasks.fetch import fetch_task
from tasks.plan import plan_task


class ShardsFailed(RuntimeError):
    """Some shards failed; the message lists them and how to resume."""


@dataclass
class IngestSummary:
    source: SourceInfo | None = None
    plan: PlanManifest | None = None
    stages: list[StageResult] = field(default_factory=list)

    @property
    def failed(self) -> dict[str, dict[str, str]]:
        return {r.stage: r.failed for r in self.stages if r.failed}


def _settings(p: IngestParams) -> Settings:
    return get_settings(
        data_dir=p.data_dir,
        shard_size=p.shard_size,
        fetch_workers=p.fetch_workers,
        allow_file_urls=p.allow_file_urls,
        shard_concurrency=p.shard_concurrency,
    )


@flow(name="ingest", log_prints=True)
def ingest(params: IngestParams) -> IngestSummary:
    """Ingest a prompt dataset into the data dir, up to ``params.until``; safe to rerun."""
    settings = _settings(params)
    data_dir = str(settings.data_dir)
    summary = IngestSummary(source=download_task(params.source, data_dir))
    if params.runs("plan"):
        summary.plan = plan_task(
            summary.source, data_dir, params.shard_size, params.limit, force=params.force
        )
    if params.runs("fetch"):
        shards = [s.name for s in summary.plan.shards]
        fetch = fetch_task.with_options(
            retries=settings.task_retries, retry_delay_seconds=settings.task_retry_delay
        )
        with make_runner(params.runner, params.shard_concurrency) as runner:
            summary.stages.append(
                run_shards(
                    fetch,
                    shards,
                    runner=runner,
                    concurrency=params.shard_concurrency,
                    progress=params.progress,
                    data_dir=data_dir,
                    settings=settings,
                    retry_failed=params.retry_failed,
                    force=params.force,
                )
            )
    _report(summary, params)
    if summary.failed:
        lines = [f"{stage}: {', '.join(sorted(f))}" for stage, f in summary.failed.items()]
        raise ShardsFailed(
            f"failed shards — {'; '.join(lines)}. See `promptlake status --data-dir {data_dir}`; "
            "rerun the same ingest to resume (finished shards are skipped)."
        )
    return summary


def _report(summary: IngestSummary, params: IngestParams) -> None:
    """Markdown and table artifacts, and one log line, describing the run."""
    plan = summary.plan
    md = [f"# ingest `{params.source}`", f"data dir: `{params.data_dir}`, until `{params.until}`"]
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
            f"- {res.stage}: {len(res.done)} shards done, {len(res.failed)} failed; "
            f"rows {ok:,} ok, {bad:,} failed"
        )
    create_markdown_artifact("\n".join(md), key="ingest-report", description="Ingest summary")
    publish_summary(summary.stages, key="ingest-shards")
    get_run_logger().info("\n".join(md))
