"""An ingest's hold on its data dir, as flows take it: who this run is, how long it waits, and
what a scheduled run that finds the previous one still running does (it skips, saying so)."""

from __future__ import annotations

import contextlib

from prefect import get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.context import FlowRunContext
from prefect.states import Completed, State

from promptlake.flows.results import md_text
from promptlake.settings import Settings
from promptlake.storage.datadir.ingest_lock import DataDirBusy, LockNote, ingest_lock
from promptlake.storage.datadir.layout import DataDir
from promptlake.tasks.runtime.turn import say, who


def data_dir(
    data: DataDir, what: str, settings: Settings, *, scheduled: bool
) -> contextlib.AbstractContextManager[LockNote]:
    """The data dir's lock for this run (``what`` it does): a scheduled run does not wait, any
    other waits ``Settings.ingest_wait_for`` seconds, then fails naming the holder."""
    return ingest_lock(
        data,
        who=who(),
        what=what,
        wait=0.0 if scheduled else settings.ingest_wait_for(interactive=False),
        say=say,
    )


def scheduled() -> bool:
    """Whether this flow run was made by a deployment's schedule."""
    ctx = FlowRunContext.get()
    return bool(ctx and ctx.flow_run and ctx.flow_run.auto_scheduled)


def skipped(busy: DataDirBusy) -> State:
    """A scheduled run that found the previous one still running: it ends at once, Completed
    (not red in the UI) and named Skipped, saying who holds the data dir."""
    line = f"skipped: {busy}"
    create_markdown_artifact(
        f"# ingest skipped\n\n{md_text(line)}", key="ingest-skipped", description="Not run"
    )
    get_run_logger().warning(line)
    return Completed(name="Skipped", message=line)
