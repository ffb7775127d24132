"""Flow parameters as pydantic models: the Prefect UI renders them as forms."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from promptlake.storage.layout import read_json, write_json
from promptlake.storage.records import STAGES
from promptlake.storage.store import Filters

Stage = Literal["download", "plan", "fetch", "embed", "load", "index"]
assert set(Stage.__args__) == set(STAGES)  # type: ignore[attr-defined]


def recorded_path(data_dir: str) -> Path:
    return Path(data_dir) / "state" / "ingest.json"


class IngestParams(BaseModel):
    """What to ingest and how far."""

    source: str = Field(
        ...,
        description="Local .csv/.csv.gz/.parquet path, a folder of generated images (prompts "
        "from their A1111/ComfyUI metadata), an http(s) URL, or kaggle:owner/dataset",
        examples=["kaggle:tanreinama/900k-diffusion-prompts-dataset"],
    )
    data_dir: str = Field("./data", description="Data directory for every stage's output.")
    shard_size: int = Field(1000, ge=1, le=1_000_000, description="Valid rows per shard.")
    limit: int | None = Field(None, ge=1, description="Read only the first N rows.")
    until: Stage = Field("index", description="Last stage to run.")
    retry_failed: bool = Field(False, description="Re-fetch failed rows of finished shards.")
    force: bool = Field(False, description="Redo finished shards (re-plans from scratch).")
    shard_concurrency: int = Field(2, ge=1, le=64, description="Shards processed at once.")
    runner: Literal["thread", "process", "dask"] = Field(
        "process",
        description="Run shard tasks in threads of the flow's process, in worker processes "
        "(true parallelism), or on a Dask cluster (see dask_address).",
    )
    dask_address: str | None = Field(
        None, description="Scheduler address (tcp://host:8786) for runner=dask; none: local."
    )
    model: str | None = Field(None, description="CLIP hub name or local directory.")
    device: str | None = Field(None, description="auto, cpu, cuda, cuda:N or mps.")
    store_url: str | None = Field(
        None, description="chdb:///path (default: <data_dir>/store), clickhouse://… or myscale://…"
    )
    fetch_workers: int | None = Field(None, ge=1, le=512, description="HTTP threads per shard.")
    allow_file_urls: bool | None = Field(None, description="Allow file:// image URLs.")
    progress: bool = Field(False, description="Show tqdm bars (for terminals).")

    def record(self) -> None:
        """Remember these parameters in the data dir, for ``resume``."""
        update = {"force": False, "retry_failed": False, "progress": False}
        if Path(self.source).expanduser().exists():  # a deployment may run in another directory
            update["source"] = str(Path(self.source).expanduser().resolve())
        saved = self.model_copy(update=update)
        write_json(recorded_path(self.data_dir), saved.model_dump(mode="json"))

    @classmethod
    def recorded(cls, data_dir: str) -> IngestParams:
        """The parameters of the last ingest into ``data_dir``."""
        path = recorded_path(data_dir)
        if not path.exists():
            raise FileNotFoundError(
                f"no ingest was started in {data_dir} ({path} is missing): run "
                "`promptlake ingest SOURCE --data-dir DIR` first"
            )
        return cls.model_validate(read_json(path))

    @property
    def image_folder(self) -> bool:
        """Whether the source is a folder of images (their file:// URLs must be allowed)."""
        return Path(self.source).expanduser().is_dir()

    def runs(self, stage: str) -> bool:
        """Whether ``stage`` is at or before ``until``."""
        return STAGES.index(stage) <= STAGES.index(self.until)


class QueryParams(BaseModel):
    """Where to search and which rows qualify (shared by search and refine)."""

    image: str | None = Field(
        None, description="An image path or http(s) URL (reverse search / image query)."
    )
    source_site: str | None = Field(None, description="Only rows from this site.")
    min_width: int | None = Field(None, ge=0, description="Only images at least this wide.")
    min_height: int | None = Field(None, ge=0, description="Only images at least this tall.")
    origin: str | None = Field(None, description="Only rows of this origin: dataset, feedback.")
    data_dir: str = Field("./data", description="Data directory the store was built in.")
    model: str | None = Field(None, description="CLIP model; default: the one of the store.")
    store_url: str | None = Field(None, description="Store URL; default: <data_dir>/store.")

    def filters(self) -> Filters:
        return Filters(self.source_site, self.min_width, self.min_height, self.origin)


class SearchParams(QueryParams):
    """A search: a text and/or an image in, nearest prompts or images out."""

    text: str | None = Field(None, description="What to look for.", examples=["a cat on a sofa"])
    target: Literal["prompts", "images"] = Field("prompts", description="What to return.")
    k: int = Field(10, ge=1, le=1000, description="How many hits.")
    use_metadata: bool = Field(
        True, description="Image alone → prompts: answer from the image's own metadata first."
    )


class RefineParams(QueryParams):
    """A refine: a rough idea (and/or an image) in, better prompts drawn from neighbours out."""

    idea: str = Field("", description="A rough idea.", examples=["a cat sleeping on the sofa"])
    n: int = Field(3, ge=1, le=20, description="Variants to write.")
    k: int = Field(12, ge=1, le=200, description="Neighbours to draw from.")
    llm: Literal["auto", "offline", "openai"] = Field(
        "auto",
        description="offline: deterministic from the neighbours; openai: the configured "
        "OpenAI-compatible endpoint (PROMPTLAKE_LLM_*); auto: openai when configured.",
    )


class FeedbackParams(BaseModel):
    """A feedback run: weak searches and given ideas → refined prompts written back."""

    data_dir: str = Field("./data", description="Data directory the store was built in.")
    ideas: list[str] = Field(
        default_factory=list, description="Ideas to improve the store for (besides searches)."
    )
    use_searches: bool = Field(True, description="Also take recent weakly served searches.")
    max_inputs: int | None = Field(
        None, ge=0, le=1000, description="Inputs per run (default PROMPTLAKE_FEEDBACK_MAX_INPUTS)."
    )
    n: int = Field(3, ge=1, le=10, description="Variants per input.")
    k: int = Field(12, ge=1, le=200, description="Neighbours each refine draws from.")
    llm: Literal["auto", "offline", "openai"] = Field("auto", description="Refiner to use.")
    generate: bool = Field(
        False, description="Generate an image per variant with PROMPTLAKE_GENERATOR."
    )
    model: str | None = Field(None, description="CLIP model; default: the one of the store.")
    store_url: str | None = Field(None, description="Store URL; default: <data_dir>/store.")


class ResumeParams(BaseModel):
    """Rerun what is failed or missing in a data dir, with the parameters of its last ingest."""

    data_dir: str = Field("./data", description="Data directory of the ingest to resume.")
    retry_failed: bool = Field(False, description="Also re-fetch failed rows of done shards.")
    runner: Literal["thread", "process", "dask"] | None = Field(
        None, description="Override the runner of the recorded ingest."
    )
    progress: bool = Field(False, description="Show tqdm bars (for terminals).")
