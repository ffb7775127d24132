"""Flow parameters as pydantic models: the Prefect UI renders them as forms."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from storage.records import STAGES

Stage = Literal["download", "plan", "fetch", "embed", "load", "index"]
assert set(Stage.__args__) == set(STAGES)  # type: ignore[attr-defined]


class IngestParams(BaseModel):
    """What to ingest and how far."""

    source: str = Field(
        ...,
        description="Local .csv/.csv.gz/.parquet path, an http(s) URL, or kaggle:owner/dataset",
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

    def runs(self, stage: str) -> bool:
        """Whether ``stage`` is at or before ``until``."""
        return STAGES.index(stage) <= STAGES.index(self.until)
