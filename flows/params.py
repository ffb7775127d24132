"""Flow parameters: one typed record per flow, and the field types its flow declares.

Each flow takes its parameters flat (``prefect deployment run ingest/ingest -p source=…``), as
keyword arguments annotated with the types below, and turns them into its record here
(``IngestParams.of_call(locals())``). A parameter that mirrors a setting is None when not given
and resolves from ``Settings`` in the process that runs the flow (``promptlake serve``, a
worker, the CLI); see flows/form.py for how the Prefect UI's forms keep it blank.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field

from promptlake.flows.form import FlowParams, Hidden, Param
from promptlake.settings import LLMChoice, Settings
from promptlake.storage.datadir.layout import DataDir, read_json, write_json
from promptlake.storage.datadir.records import STAGES
from promptlake.storage.store import Filters
from promptlake.storage.store.urls import parse_store_url

Stage = Literal["download", "plan", "fetch", "embed", "load", "index"]
assert set(Stage.__args__) == set(STAGES)  # type: ignore[attr-defined]
Runner = Literal["thread", "process", "dask"]
Count = Annotated[int, Field(ge=1)]

# the fields, each written once: the models below and the flows' signatures share them
Source = Annotated[
    str,
    Param(
        "Local .csv/.csv.gz/.parquet path, a folder of generated images (prompts from their "
        "A1111/ComfyUI metadata), an http(s) URL, or kaggle:owner/dataset."
    ),
]
DataDirP = Annotated[str | None, Param("Data directory of every stage's output.", "data_dir")]
ShardSize = Annotated[
    Annotated[int, Field(ge=1, le=1_000_000)] | None,
    Param(
        "Valid rows per shard.",
        "shard_size",
        blank="the data dir's own size; a new data dir, PROMPTLAKE_SHARD_SIZE",
    ),
]
Limit = Annotated[Count | None, Param("Read only the first N rows.")]
Until = Annotated[Stage, Param("Last stage to run.")]
RetryFailed = Annotated[bool, Param("Also re-fetch the failed rows of finished shards.")]
Force = Annotated[bool, Param("Redo finished shards (re-plans from scratch).")]
ShardConcurrency = Annotated[
    Annotated[int, Field(ge=1, le=64)] | None,
    Param("Shards processed at once.", "shard_concurrency"),
]
RunnerP = Annotated[
    Runner | None,
    Param(
        "Shard tasks in threads of the flow's process, in worker processes (true parallelism), "
        "or on a Dask cluster (see dask_address).",
        "runner",
    ),
]
DaskAddress = Annotated[
    str | None, Param("Scheduler address (tcp://host:8786) for runner dask.", "dask_address")
]
ClipModel = Annotated[str | None, Param("CLIP hub name or local directory.", "clip_model")]
StoreClip = Annotated[
    str | None, Param("CLIP model.", "clip_model", blank="the model the store was built with")
]
Device = Annotated[str | None, Param("auto, cpu, cuda, cuda:N or mps.", "device")]
StoreUrl = Annotated[
    str | None,
    Param(
        "chdb:///path, clickhouse://… or myscale://… (no password: that stays in "
        "PROMPTLAKE_STORE_URL).",
        "store_url",
        blank="PROMPTLAKE_STORE_URL of the process that runs it, else the data dir's own store",
    ),
]
FetchWorkers = Annotated[
    Annotated[int, Field(ge=1, le=512)] | None, Param("HTTP threads per shard.", "fetch_workers")
]
Wait = Annotated[
    Annotated[float, Field(ge=0, le=7 * 24 * 3600)] | None,
    Param(
        "Seconds to wait while another ingest holds the data dir (0: fail at once).",
        "ingest_wait",
        blank="PROMPTLAKE_INGEST_WAIT of the process that runs it, else 600",
    ),
]
# not in the forms: a worker's operator allows file:// URLs (README), and the v1 form would
# send an untouched switch as false, overriding PROMPTLAKE_ALLOW_FILE_URLS
AllowFileUrls = Hidden[
    Annotated[bool | None, Param("Allow file:// image URLs.", "allow_file_urls")]
]
Progress = Hidden[bool]  # tqdm bars: for terminals, not forms


class IngestParams(FlowParams):
    """What to ingest and how far."""

    MAIN: ClassVar[str] = "source"

    source: Source
    data_dir: DataDirP = None
    shard_size: ShardSize = None
    limit: Limit = None
    until: Until = "index"
    retry_failed: RetryFailed = False
    force: Force = False
    shard_concurrency: ShardConcurrency = None
    runner: RunnerP = None
    dask_address: DaskAddress = None
    clip_model: ClipModel = None
    device: Device = None
    store_url: StoreUrl = None
    fetch_workers: FetchWorkers = None
    wait: Wait = None
    allow_file_urls: AllowFileUrls = None
    progress: Progress = False

    def settings(self, **overrides: Any) -> Settings:
        """A folder of images is read through file:// URLs: allowed unless the user said no."""
        if self.allow_file_urls is None and self.image_folder:
            overrides.setdefault("allow_file_urls", True)
        return super().settings(**overrides)

    def record(self, data: DataDir) -> None:
        """Remember this ingest in ``data``, for ``resume``: only what was given (what was not
        resolves afresh when resuming, the shard size from the plan itself); never the data
        dir, and paths inside it relative to it, so that it can move."""
        kept = self.model_dump(mode="json", exclude_none=True, exclude=NOT_RECORDED)
        if Path(self.source).expanduser().exists():  # a deployment may run in another directory
            kept["source"] = data.relative(Path(self.source).expanduser().resolve())
        if self.store_url and parse_store_url(self.store_url).scheme == "chdb":
            path = Path(parse_store_url(self.store_url).path).resolve()
            kept["store_url"] = f"chdb://{data.relative(path)}"
        write_json(data.ingest_record, {"format": RECORD_FORMAT, **kept})

    @classmethod
    def recorded(cls, data: DataDir, say: Callable[[str], None] = print) -> IngestParams:
        """The parameters of the last ingest into ``data``, in ``data`` wherever it was when
        they were recorded. A record from before format 2 also holds values that were not given
        (pre-filled forms): its data dir and shard size are dropped, the rest kept (``say``
        tells which)."""
        if not data.ingest_record.exists():
            raise FileNotFoundError(
                f"no ingest was started in {data.root} ({data.ingest_record} is missing): run "
                "`promptlake ingest SOURCE --data-dir DIR` first"
            )
        saved = read_json(data.ingest_record)
        if "model" in saved:  # recorded before the field took the setting's name
            saved["clip_model"] = saved.pop("model")
        was = saved.pop("data_dir", None)
        if saved.pop("format", 1) < RECORD_FORMAT:
            saved = _legacy(saved, data, say)
        saved["source"] = data.moved_path(saved["source"], was)
        url = saved.get("store_url")
        if url and parse_store_url(url).scheme == "chdb":
            saved["store_url"] = f"chdb://{data.moved_path(parse_store_url(url).path, was)}"
        return cls.model_validate({**saved, "data_dir": str(data.root)})

    @property
    def image_folder(self) -> bool:
        """Whether the source is a folder of images (their file:// URLs must be allowed)."""
        return Path(self.source).expanduser().is_dir()

    def runs(self, stage: str) -> bool:
        """Whether ``stage`` is at or before ``until``."""
        return STAGES.index(stage) <= STAGES.index(self.until)


RECORD_FORMAT = 2  # state/ingest.json: 2 records only what was given
# this run's own, not the data dir's (and the data dir itself: it may move)
NOT_RECORDED = {"data_dir", "force", "retry_failed", "progress", "wait"}


def _legacy(saved: dict[str, Any], data: DataDir, say: Callable[[str], None]) -> dict[str, Any]:
    """A format-1 record: it cannot tell given values from pre-filled ones. The shard size goes
    (the plan keeps its own), so do this run's flags; other values stay as given — safer than
    embedding with another model — and the log says how to drop them."""
    kept = {k: v for k, v in saved.items() if k not in {"shard_size", *NOT_RECORDED}}
    named = sorted(k for k, v in kept.items() if v is not None and k not in ("source", "until"))
    if named:
        say(
            f"resume: {data.ingest_record} predates format 2; kept "
            f"{', '.join(f'{k}={kept[k]}' for k in named)} as given — delete those keys to "
            "resolve them from this process's environment"
        )
    return kept


DataDirOfStore = Annotated[str | None, Param("Data directory the store was built in.", "data_dir")]
Image = Annotated[str | None, Param("An image path or http(s) URL (reverse search).")]
SourceSite = Annotated[str | None, Param("Only rows from this site.")]
MinWidth = Annotated[Annotated[int, Field(ge=0)] | None, Param("Only images at least this wide.")]
MinHeight = Annotated[Annotated[int, Field(ge=0)] | None, Param("Only images at least this tall.")]
Origin = Annotated[str | None, Param("Only rows of this origin: dataset, feedback.")]
ModelName = Annotated[
    str | None, Param("Only images made with a model whose name contains this (e.g. xl).")
]
Tool = Annotated[str | None, Param("Only images made with this tool (comfyui, …).")]


class QueryParams(FlowParams):
    """Where to search and which rows qualify (shared by search and refine)."""

    image: Image = None
    source_site: SourceSite = None
    min_width: MinWidth = None
    min_height: MinHeight = None
    origin: Origin = None
    model_name: ModelName = None
    tool: Tool = None
    data_dir: DataDirOfStore = None
    clip_model: StoreClip = None
    store_url: StoreUrl = None

    def filters(self) -> Filters:
        return Filters.of(self)


Text = Annotated[str | None, Param("What to look for.")]
Target = Annotated[Literal["prompts", "images"], Param("What to return.")]
SearchK = Annotated[
    Annotated[int, Field(ge=1, le=1000)] | None, Param("How many hits.", "search_k")
]
UseMetadata = Annotated[
    bool, Param("Image alone → prompts: answer from the image's own metadata first.")
]


class SearchParams(QueryParams):
    """A search: a text and/or an image in, nearest prompts or images out."""

    MAIN: ClassVar[str] = "text"

    text: Text = None
    target: Target = "prompts"
    k: SearchK = None
    use_metadata: UseMetadata = True


Idea = Annotated[str, Param("A rough idea.")]
RefineN = Annotated[
    Annotated[int, Field(ge=1, le=20)] | None, Param("Variants to write.", "refine_n")
]
RefineK = Annotated[
    Annotated[int, Field(ge=1, le=200)] | None, Param("Neighbours to draw from.", "refine_k")
]
Llm = Annotated[
    LLMChoice,
    Param(
        "offline: deterministic from the neighbours; openai: the configured OpenAI-compatible "
        "endpoint (PROMPTLAKE_LLM_*); auto: openai when configured."
    ),
]


class RefineParams(QueryParams):
    """A refine: a rough idea (and/or an image) in, better prompts drawn from neighbours out."""

    MAIN: ClassVar[str] = "idea"

    idea: Idea = ""
    n: RefineN = None
    k: RefineK = None
    llm: Llm = "auto"


Ideas = Annotated[
    list[str] | None,
    Param("Ideas to improve the store for, besides searches (-p 'ideas=[\"a cat\"]')."),
]
UseSearches = Annotated[bool, Param("Also take recent weakly served searches.")]
MaxInputs = Annotated[
    Annotated[int, Field(ge=0, le=1000)] | None,
    Param("Inputs per run.", "feedback_max_inputs"),
]
Generate = Annotated[bool, Param("Generate an image per variant with PROMPTLAKE_GENERATOR.")]


class FeedbackParams(FlowParams):
    """A feedback run: weak searches and given ideas → refined prompts written back."""

    MAIN: ClassVar[str] = "ideas"

    ideas: Ideas = None
    data_dir: DataDirOfStore = None
    use_searches: UseSearches = True
    max_inputs: MaxInputs = None
    n: RefineN = None
    k: RefineK = None
    llm: Llm = "auto"
    generate: Generate = False
    clip_model: StoreClip = None
    store_url: StoreUrl = None


ResumeDataDir = Annotated[str | None, Param("Data directory of the ingest to resume.", "data_dir")]
ResumeRunner = Annotated[
    Runner | None,
    Param(
        "Where shard tasks run this time.",
        "runner",
        blank="the recorded ingest's, else PROMPTLAKE_RUNNER",
    ),
]


class ResumeParams(FlowParams):
    """Rerun what is failed or missing in a data dir, with the parameters of its last ingest."""

    MAIN: ClassVar[str] = "data_dir"

    data_dir: ResumeDataDir = None
    retry_failed: RetryFailed = False
    runner: ResumeRunner = None
    wait: Wait = None
    progress: Progress = False
