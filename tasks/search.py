"""search: the Prefect task of the search flow, over ``tasks.query.search``.

The CLI and the search page call ``tasks.query.search`` directly: that package imports no
Prefect, whose import is about a second of a cold search."""

from __future__ import annotations

from prefect import task

from promptlake.settings import Settings
from promptlake.storage.store.hits import Hit
from promptlake.tasks.query.search import SearchRequest, run

STAGE = "search"


@task(name=STAGE)
def search_task(req: SearchRequest, settings: Settings, *, use_metadata: bool = True) -> list[Hit]:
    """One search (an image alone asking for prompts answers from its metadata first)."""
    return run(req, settings, use_metadata=use_metadata)
