"""What a run has left to do: the stage each shard must start at. A shard whose every stage is
finished makes no task run at all, so a rerun with nothing new costs about an empty run. One
listing of each stage's marker folder, and no model loaded (the embed namespace is read from
the model's files)."""

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
    """The shards ``stage`` has marked finished (for embed: with the configured model; a model
    not described without loading it, e.g. a hub name not yet downloaded: none)."""
    if stage != "embed":
        return Markers(data, stage).names()
    known = describe_model(settings.clip_model)
    return embed_markers(data, known.namespace).names() if known else set()
