"""What a run has left to do: the stage each shard must start at. A shard whose every stage is
finished makes no task run at all, so a rerun with nothing new costs about an empty run. Each
stage's markers are read and checked once (their outputs and inputs as recorded: a damaged or
stale one is not finished), and no model is loaded (the embed namespace is read from the
model's files)."""

from __future__ import annotations

from promptlake.settings import Settings
from promptlake.storage.datadir.layout import DataDir
from promptlake.storage.datadir.markers import Markers
from promptlake.tasks.clip.encoder import describe_model
from promptlake.tasks.embed import embed_markers


def entry_stages(
    data: DataDir,
    shards: list[str],
    stages: list[str],
    settings: Settings,
    *,
    rerun: bool = False,
) -> dict[str, int]:
    """Each shard with work left, and the index in ``stages`` of its first unfinished stage.
    From there it goes through every later stage, each of which skips itself when its marker
    is there by then. ``rerun`` (``--force``, ``--retry-failed``: the stages decide row by row)
    starts every shard at the first stage."""
    if rerun:
        return dict.fromkeys(shards, 0)
    finished = [_finished(data, stage, settings) for stage in stages]
    todo = {}
    for shard in shards:
        first = next((i for i, done in enumerate(finished) if shard not in done), None)
        if first is not None:
            todo[shard] = first
    return todo


def _finished(data: DataDir, stage: str, settings: Settings) -> set[str]:
    """The shards ``stage`` has finished, by markers that check out (for embed: with the
    configured model; a model not described without loading it, e.g. a hub name not yet
    downloaded: none)."""
    if stage != "embed":
        return set(Markers(data, stage).checked()[0])
    known = describe_model(settings.clip_model)
    return set(embed_markers(data, known.namespace).checked()[0]) if known else set()
