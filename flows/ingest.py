"""The ingest flow: download → plan → per shard fetch → embed, ending Failed on failed shards."""

from __future__ import annotations

import contextlib
import functools
from typing import Any

from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.exceptions import ObjectNotFound
from prefect.states import State
from prefect.task_runners import TaskRunner

from promptlake.flows import holding
from promptlake.flows.form import BLANK
from promptlake.flows.params import (
    AllowFileUrls,
    ClipModel,
    DaskAddress,
    DataDirP,
    Device,
    FetchWorkers,
    Force,
    IngestParams,
    Limit,
    Progress,
    ResumeDataDir,
    ResumeParams,
    ResumeRunner,
    RetryFailed,
    RunnerP,
    ShardConcurrency,
    ShardSize,
    Source,
    StoreUrl,
    Until,
    Wait,
)
from promptlake.flows.report import (
    IngestSummary,
    check_rows,
    report,
    run_failed,
)
from promptlake.flows.shards import (
    Stage,
    StageResult,
    make_runner,
    result_of,
    run_pipeline,
)
from promptlake.settings import Settings, min_free_bytes
from promptlake.storage.datadir import activity
from promptlake.storage.datadir.ingest_lock import DataDirBusy
from promptlake.storage.datadir.layout import DataDir
from promptlake.tasks.download import download_task
from promptlake.tasks.embed import GPU_LIMIT, embed_task, prefect_server_configured
from promptlake.tasks.fetch import fetch_task
from promptlake.tasks.index import index_task
from promptlake.tasks.load import load_task, reconcile_task
from promptlake.tasks.plan import plan_task
from promptlake.tasks.runtime.disk import prepare
from promptlake.tasks.runtime.todo import entry_stages


def ensure_gpu_limit(slots: int) -> None:
    """Create the GPU concurrency limit if the server lacks it (an operator's value is kept)."""
    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(GPU_LIMIT)
        except ObjectNotFound:
            client.create_global_concurrency_limit(
                GlobalConcurrencyLimitCreate(name=GPU_LIMIT, limit=slots)
            )


def _stages(p: IngestParams, s: Settings, local: TaskRunner) -> list[Stage]:
    common = {"data_dir": str(s.data_dir), "settings": s, "force": p.force}

    def retrying(task: Any) -> Any:
        return task.with_options(retries=s.task_retries, retry_delay_seconds=s.task_retry_delay)

    stages = [
        Stage(
            retrying(fetch_task),
            s.shard_concurrency,
            {**common, "retry_failed": p.retry_failed},
        )
    ]
    if p.runs("embed"):
        if prefect_server_configured():
            ensure_gpu_limit(s.gpu_slots)
        stages.append(Stage(retrying(embed_task), s.gpu_slots, common))
    if p.runs("load"):  # chDB allows one process per store: loads stay in the flow's process
        stages.append(Stage(retrying(load_task), 1, common, runner=local))
    return stages


@flow(name="ingest", log_prints=True)
def ingest(
    source: Source,
    *,
    data_dir: DataDirP = BLANK,
    shard_size: ShardSize = BLANK,
    limit: Limit = BLANK,
    until: Until = "index",
    retry_failed: RetryFailed = False,
    force: Force = False,
    shard_concurrency: ShardConcurrency = BLANK,
    runner: RunnerP = BLANK,
    dask_address: DaskAddress = BLANK,
    clip_model: ClipModel = BLANK,
    device: Device = BLANK,
    store_url: StoreUrl = BLANK,
    fetch_workers: FetchWorkers = BLANK,
    wait: Wait = BLANK,
    allow_file_urls: AllowFileUrls = BLANK,
    progress: Progress = False,
) -> IngestSummary | State:
    """Ingest a prompt dataset into the data dir, up to ``until``; safe to rerun. What is left
    blank resolves in the process that runs it (its PROMPTLAKE_* settings)."""
    return run_ingest(IngestParams.of_call(locals()), record=True)


@flow(name="resume", log_prints=True)
def resume(
    data_dir: ResumeDataDir = BLANK,
    *,
    retry_failed: RetryFailed = False,
    runner: ResumeRunner = BLANK,
    wait: Wait = BLANK,
    progress: Progress = False,
) -> IngestSummary | State:
    """Rerun the failed and missing shards of a data dir with its last ingest's parameters
    (finished shards are skipped by their markers)."""
    params = ResumeParams.of_call(locals())
    saved = IngestParams.recorded(DataDir(params.settings().data_dir))
    update: dict[str, Any] = {
        "retry_failed": params.retry_failed,
        "progress": params.progress,
        "wait": params.wait,
    }
    if params.runner:
        update["runner"] = params.runner
    return run_ingest(saved.model_copy(update=update), record=False)


def run_ingest(params: IngestParams, *, record: bool) -> IngestSummary | State:
    """The ingest of ``params``, holding its data dir meanwhile (``record``: for ``resume``).
    While another ingest holds it, a scheduled run skips; any other waits its turn, bounded."""
    settings = params.settings()
    data = DataDir(settings.data_dir)
    what = f"ingest {params.source} (until {params.until})"
    scheduled = holding.scheduled()
    with contextlib.ExitStack() as held:
        try:
            held.enter_context(holding.data_dir(data, what, settings, scheduled=scheduled))
        except DataDirBusy as busy:
            if not scheduled:
                raise
            return holding.skipped(busy)
        prepare(data, settings)  # the disk's floor free, the ballast for failure records
        if record:
            params.record(data)
        with activity.running(data, what):
            summary = _run_stages(params, data)
    report(summary, params, data)
    if summary.failed:
        raise run_failed(summary.failed, data)
    return summary


def _run_stages(params: IngestParams, data: DataDir) -> IngestSummary:
    settings = params.settings()
    data_dir = str(data.root)
    source = download_task(params.source, data_dir)
    summary = IngestSummary(source=source)
    if not params.runs("plan"):
        return summary
    plan = summary.plan = plan_task(
        source,
        data_dir,
        settings.shard_size,
        params.limit,
        force=params.force,
        size_given=params.shard_size is not None,  # the environment's size is not "given"
        min_free=min_free_bytes(settings),
    )
    check_rows(plan, source)
    if params.runs("fetch"):
        with make_runner("thread", 1) as local:
            stages = _stages(params, settings, local)
            shards = [s.name for s in plan.shards]
            summary.stages = _run_shards(stages, shards, params, settings, data)
            if params.runs("load") and not summary.failed:
                result_of(
                    local.submit(
                        reconcile_task,
                        {"data_dir": data_dir, "settings": settings, "shards": shards},
                    )
                )
            if params.runs("index") and not summary.failed:
                summary.index = result_of(
                    local.submit(index_task, {"data_dir": data_dir, "settings": settings})
                )
    return summary


def _run_shards(
    stages: list[Stage], shards: list[str], params: IngestParams, s: Settings, data: DataDir
) -> list[StageResult]:
    """The shards with work left, each from its first unfinished stage; the finished ones make
    no task run (nor does a run with nothing to do start any worker)."""
    names = [st.task.name for st in stages]
    todo = entry_stages(data, shards, names, s, rerun=params.force or params.retry_failed)
    workers = sum(st.limit for st in stages if st.runner is None)
    run = functools.partial(run_pipeline, stages, todo, total=len(shards), progress=params.progress)
    if not todo:
        return run(runner=None)
    with make_runner(s.runner, workers, s.dask_address) as runner:
        return run(runner=runner)
