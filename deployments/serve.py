"""The deployments promptlake registers, served by ``promptlake serve`` (no work pool needed).

``deployments/prefect.yaml`` declares the same for a process work pool (``prefect deploy``).
"""

from __future__ import annotations

from prefect import serve
from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy

from promptlake.flows.feedback import feedback_flow
from promptlake.flows.ingest import ingest, resume
from promptlake.flows.refine import refine_flow
from promptlake.flows.search import search_flow
from promptlake.settings import Settings

TAGS = ["promptlake"]


def deployments(settings: Settings) -> list:
    """ingest (manual, full form), resume, feedback (cron), search and refine (ad hoc). Their
    parameters left blank resolve from the serving process's settings when a run starts: the
    forms carry no value of this process."""
    return [
        ingest.to_deployment(
            name="ingest",
            tags=TAGS,
            description="Ingest a prompt dataset (CSV/parquet path or URL, kaggle:owner/name, or "
            "a folder of generated images) through download → plan → fetch → embed → load → index.",
        ),
        resume.to_deployment(
            name="resume",
            tags=TAGS,
            description="Rerun the failed and missing shards of a data dir with its last "
            "ingest's parameters; optionally re-fetch failed rows.",
        ),
        feedback_flow.to_deployment(
            name="feedback",
            tags=TAGS,
            cron=settings.feedback_cron,
            description="Refine weakly served searches and given ideas into new prompts (and "
            "images) written back with their lineage.",
        ),
        search_flow.to_deployment(
            name="search",
            tags=TAGS,
            description="Search prompts or images by text and/or image; results with thumbnails.",
        ),
        refine_flow.to_deployment(
            name="refine",
            tags=TAGS,
            description="Better prompts for an idea, drawn from the nearest ones.",
        ),
        *folder_deployments(settings),
    ]


def folder_deployments(settings: Settings) -> list:
    """``ingest-folder``: keeps the store equal to ``PROMPTLAKE_WATCH_FOLDER``, ingesting what
    changed every ``PROMPTLAKE_WATCH_INTERVAL`` seconds (or on ``PROMPTLAKE_WATCH_CRON``); one run
    at a time. None when no folder is watched."""
    if settings.watch_folder is None:
        return []
    return [
        ingest.to_deployment(
            name="ingest-folder",
            tags=TAGS,
            cron=settings.watch_cron,
            interval=None if settings.watch_cron else settings.watch_interval,
            # an overlapping scheduled run is cancelled before it takes a slot; one started
            # meanwhile elsewhere (CLI, another deployment) makes it skip (flows/holding.py)
            concurrency_limit=ConcurrencyLimitConfig(
                limit=1, collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW
            ),
            parameters={"source": str(settings.watch_folder.resolve())},
            description=f"Keep the store equal to the folder {settings.watch_folder}: new, "
            "replaced and deleted images are ingested on a schedule.",
        )
    ]


def serve_all(settings: Settings) -> None:
    """Register the deployments with the Prefect API and run their flow runs until stopped."""
    serve(*deployments(settings), print_starting_message=True)
