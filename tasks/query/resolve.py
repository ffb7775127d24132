"""A query's light parts: the settings it runs with and the image it names. No torch here, so
the CLI can compare its settings with a running search page's, and read the image to send it
there, before it decides to load CLIP at all."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

from promptlake.settings import Settings
from promptlake.storage.datadir import vectors
from promptlake.storage.datadir.layout import DataDir
from promptlake.storage.store.hits import StoreError
from promptlake.tasks.clip.errors import ModelLoadError
from promptlake.tasks.net.fetcher import Fetcher


def query_settings(settings: Settings) -> Settings:
    """Settings for searching a data dir: unless a model was set (a parameter, a flag or
    PROMPTLAKE_CLIP_MODEL), the one the data dir was embedded with."""
    if "clip_model" in settings.model_fields_set:
        return settings
    found = vectors.current_namespace(DataDir(settings.data_dir))
    if not found:
        return settings
    model = found[1]["model"]
    if len(str(found[1].get("revision"))) == 64 and not Path(model).is_dir():
        # a local folder's fingerprint (a hub revision is a 40-hex commit), recorded by an
        # ingest that wrote the folder as given: relative to where that ingest ran
        raise ModelLoadError(
            f"{settings.data_dir} was embedded with a local model recorded as {model!r}, which "
            "is not a folder here (a relative path, from the folder that ingest ran in): pass "
            "--model /path/to/that/folder (PROMPTLAKE_CLIP_MODEL); ingests record it absolute"
        )
    return settings.model_copy(update={"clip_model": model})


def read_image(source: str, settings: Settings) -> bytes:
    """Image bytes from a local path or an http(s) URL (with the fetch stage's limits)."""
    if urlparse(source).scheme in ("http", "https"):
        got = Fetcher(settings).attempt(source)
        if got.status != "ok":
            raise StoreError(f"could not fetch {source}: {got.status} {got.error}")
        return got.body
    path = Path(source).expanduser()
    if not path.is_file():
        raise StoreError(f"image not found: {source!r}")
    return path.read_bytes()
