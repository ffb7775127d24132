"""refine: the Prefect task of the refine flow, over ``tasks.query.refine``.

The CLI and the search page call ``tasks.query.refine`` directly: that package imports no
Prefect, whose import is about a second of a cold refine."""

from __future__ import annotations

from prefect import task

from promptlake.settings import Settings
from promptlake.storage.datadir.layout import DataDir
from promptlake.tasks.query.refine import RefineRequest, RefineResult, refine

STAGE = "refine"


@task(name=STAGE)
def refine_task(req: RefineRequest, settings: Settings) -> RefineResult:
    """One refine (LLM errors are not retried here: the client already retried them)."""
    return refine(req, DataDir(settings.data_dir), settings)
