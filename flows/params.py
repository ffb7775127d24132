"""Flow parameters as pydantic models: the Prefect UI renders them as forms.

A parameter that mirrors a setting (``shard_size``, ``data_dir``, ``k``…) is declared with
:func:`setting`: left unset it stays ``None`` and resolves from ``Settings`` — the environment of
the process that runs the flow (``promptlake serve``, a worker, the CLI) — at run time. Defaults
live in ``Settings`` only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from promptlake.settings import LLMChoice, Settings, get_settings, local_model_path
from promptlake.storage.datadir.layout import DataDir, read_json, write_json
from promptlake.storage.datadir.records import STAGES
from promptlake.storage.store import Filters
from promptlake.storage.store.urls import parse_store_url

Stage = Literal["download", "plan", "fetch", "embed", "load", "index"]
assert set(Stage.__args__) == set(STAGES)  # type: ignore[attr-defined]


class _FromSetting:
    """JSON-schema hook of a :func:`setting` field: a plain input (no "null" switch) showing the
    setting's current value as its default."""

    def __init__(self, name: str) -> None:
        self.setting = name

    def __call__(self, schema: dict[str, Any]) -> None:
        branches = [b for b in schema.pop("anyOf", []) if b.get("type") != "null"]
        if len(branches) == 1:
            schema.update(branches[0])
        value = getattr(Settings(), self.setting)
        schema.pop("default", None)
        if value is not None:  # what the run would use if the field stays as it is
            schema["default"] = str(value.resolve()) if isinstance(value, Path) else value


def setting(name: str, description: str, **constraints: Any) -> Any:
    """A parameter that overrides ``Settings.<name>`` when given, and is that setting when not."""
    if name not in Settings.model_fields:
        raise ValueError(f"no setting named {name!r}")
    env = f"PROMPTLAKE_{name.upper()}"
    return Field(
        None,
        description=f"{description} Unset: {env} of the process that runs it.",
        json_schema_extra=_FromSetting(name),
        **constraints,
    )


class FlowParams(BaseModel):
    """Parameters of one flow; ``settings()`` is what the run uses."""

    model_config = ConfigDict(extra="forbid")  # a misspelt parameter is an error, not ignored

    def settings(self, **overrides: Any) -> Settings:
        """Settings from the environment, with every parameter the user set on top."""
        given = {}
        for name, field in type(self).model_fields.items():
            hook = field.json_schema_extra
            if isinstance(hook, _FromSetting) and getattr(self, name) is not None:
                given[hook.setting] = getattr(self, name)
        return get_settings(**given, **overrides)

    @field_validator("store_url", check_fields=False)
    @classmethod
    def _no_password(cls, url: str | None) -> str | None:
        """Parameters show in the Prefect UI and in state files: a password must not travel
        in them."""
        if url and parse_store_url(url).password:
            raise ValueError(
                "a store URL given as a parameter must not carry a password (parameters show in "
                "the Prefect UI): set PROMPTLAKE_STORE_URL with the password in the environment "
                "of the process that runs the flow"
            )
        return url

    @field_validator("clip_model", check_fields=False)
    @classmethod
    def _model_path(cls, name: str | None) -> str | None:
        """A local model folder travels as its absolute path (into ``state/ingest.json`` too),
        resolved by the process that validates the parameters: the one that runs the flow."""
        return local_model_path(name) if name else name


class IngestParams(FlowParams):
    """What to ingest and how far."""

    source: str = Field(
        ...,
        description="Local .csv/.csv.gz/.parquet path, a folder of generated images (prompts "
        "from their A1111/ComfyUI metadata), an http(s) URL, or kaggle:owner/dataset",
        examples=["kaggle:tanreinama/900k-diffusion-prompts-dataset"],
    )
    data_dir: str | None = setting("data_dir", "Data directory for every stage's output.")
    shard_size: int | None = setting("shard_size", "Valid rows per shard.", ge=1, le=1_000_000)
    limit: int | None = Field(None, ge=1, description="Read only the first N rows.")
    until: Stage = Field("index", description="Last stage to run.")
    retry_failed: bool = Field(False, description="Re-fetch failed rows of finished shards.")
    force: bool = Field(False, description="Redo finished shards (re-plans from scratch).")
    shard_concurrency: int | None = setting(
        "shard_concurrency", "Shards processed at once.", ge=1, le=64
    )
    runner: Literal["thread", "process", "dask"] | None = setting(
        "runner",
        "Run shard tasks in threads of the flow's process, in worker processes (true "
        "parallelism), or on a Dask cluster (see dask_address).",
    )
    dask_address: str | None = setting(
        "dask_address", "Scheduler address (tcp://host:8786) for runner=dask; none: local."
    )
    clip_model: str | None = setting("clip_model", "CLIP hub name or local directory.")
    device: str | None = setting("device", "auto, cpu, cuda, cuda:N or mps.")
    store_url: str | None = setting(
        "store_url",
        "chdb:///path (default: the store in the data dir), clickhouse://… or myscale://…",
    )
    fetch_workers: int | None = setting("fetch_workers", "HTTP threads per shard.", ge=1, le=512)
    allow_file_urls: bool | None = setting("allow_file_urls", "Allow file:// image URLs.")
    progress: bool = Field(False, description="Show tqdm bars (for terminals).")

    def settings(self, **overrides: Any) -> Settings:
        """A folder of images is read through file:// URLs: allowed unless the user said no."""
        if self.allow_file_urls is None and self.image_folder:
            overrides.setdefault("allow_file_urls", True)
        return super().settings(**overrides)

    def record(self, data: DataDir) -> None:
        """Remember this ingest in ``data``, for ``resume``: what the user set; the rest resolves
        again when resuming (the shard size from the plan itself). A source inside the data dir
        is recorded relative to it, so the data dir can move (``data_dir`` is only a note)."""
        update = {
            "force": False,
            "retry_failed": False,
            "progress": False,
            "data_dir": str(data.root),
        }
        if Path(self.source).expanduser().exists():  # a deployment may run in another directory
            update["source"] = data.relative(Path(self.source).expanduser().resolve())
        write_json(data.ingest_record, self.model_copy(update=update).model_dump(mode="json"))

    @classmethod
    def recorded(cls, data: DataDir) -> IngestParams:
        """The parameters of the last ingest into ``data``, in ``data`` wherever it was when
        they were recorded (a moved data dir resumes in place: the recorded ``data_dir`` is
        never followed; paths under it are taken as paths under ``data``)."""
        if not data.ingest_record.exists():
            raise FileNotFoundError(
                f"no ingest was started in {data.root} ({data.ingest_record} is missing): run "
                "`promptlake ingest SOURCE --data-dir DIR` first"
            )
        saved = read_json(data.ingest_record)
        if "model" in saved:  # recorded before the field took the setting's name
            saved["clip_model"] = saved.pop("model")
        was = saved.get("data_dir")
        saved["data_dir"] = str(data.root)
        saved["source"] = data.moved_path(saved["source"], was)
        url = saved.get("store_url")
        if url and parse_store_url(url).scheme == "chdb":
            saved["store_url"] = f"chdb://{data.moved_path(parse_store_url(url).path, was)}"
        return cls.model_validate(saved)

    @property
    def image_folder(self) -> bool:
        """Whether the source is a folder of images (their file:// URLs must be allowed)."""
        return Path(self.source).expanduser().is_dir()

    def runs(self, stage: str) -> bool:
        """Whether ``stage`` is at or before ``until``."""
        return STAGES.index(stage) <= STAGES.index(self.until)


def _main_first(schema: dict[str, Any], model: type[BaseModel]) -> None:
    """The form shows the model's main field (a search's text, a refine's idea) first."""
    main = getattr(model, "MAIN", None)
    props = schema.get("properties", {})
    if main in props:
        schema["properties"] = {main: props[main]} | {k: v for k, v in props.items() if k != main}


class QueryParams(FlowParams):
    """Where to search and which rows qualify (shared by search and refine)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_main_first)

    image: str | None = Field(
        None, description="An image path or http(s) URL (reverse search / image query)."
    )
    source_site: str | None = Field(None, description="Only rows from this site.")
    min_width: int | None = Field(None, ge=0, description="Only images at least this wide.")
    min_height: int | None = Field(None, ge=0, description="Only images at least this tall.")
    origin: str | None = Field(None, description="Only rows of this origin: dataset, feedback.")
    model_name: str | None = Field(
        None, description="Only images made with a model whose name contains this (e.g. xl)."
    )
    tool: str | None = Field(None, description="Only images made with this tool (comfyui, …).")
    data_dir: str | None = setting("data_dir", "Data directory the store was built in.")
    clip_model: str | None = setting("clip_model", "CLIP model; unset: the store's own.")
    store_url: str | None = setting("store_url", "Store URL; default: the store in the data dir.")

    def filters(self) -> Filters:
        return Filters.of(self)


class SearchParams(QueryParams):
    """A search: a text and/or an image in, nearest prompts or images out."""

    MAIN: ClassVar[str] = "text"

    text: str | None = Field(None, description="What to look for.", examples=["a cat on a sofa"])
    target: Literal["prompts", "images"] = Field("prompts", description="What to return.")
    k: int | None = setting("search_k", "How many hits.", ge=1, le=1000)
    use_metadata: bool = Field(
        True, description="Image alone → prompts: answer from the image's own metadata first."
    )


class RefineParams(QueryParams):
    """A refine: a rough idea (and/or an image) in, better prompts drawn from neighbours out."""

    MAIN: ClassVar[str] = "idea"

    idea: str = Field("", description="A rough idea.", examples=["a cat sleeping on the sofa"])
    n: int | None = setting("refine_n", "Variants to write.", ge=1, le=20)
    k: int | None = setting("refine_k", "Neighbours to draw from.", ge=1, le=200)
    llm: LLMChoice = Field(
        "auto",
        description="offline: deterministic from the neighbours; openai: the configured "
        "OpenAI-compatible endpoint (PROMPTLAKE_LLM_*); auto: openai when configured.",
    )


class FeedbackParams(FlowParams):
    """A feedback run: weak searches and given ideas → refined prompts written back."""

    data_dir: str | None = setting("data_dir", "Data directory the store was built in.")
    ideas: list[str] = Field(
        default_factory=list, description="Ideas to improve the store for (besides searches)."
    )
    use_searches: bool = Field(True, description="Also take recent weakly served searches.")
    max_inputs: int | None = setting("feedback_max_inputs", "Inputs per run.", ge=0, le=1000)
    n: int | None = setting("refine_n", "Variants per input.", ge=1, le=20)
    k: int | None = setting("refine_k", "Neighbours each refine draws from.", ge=1, le=200)
    llm: LLMChoice = Field("auto", description="Refiner to use.")
    generate: bool = Field(
        False, description="Generate an image per variant with PROMPTLAKE_GENERATOR."
    )
    clip_model: str | None = setting("clip_model", "CLIP model; unset: the store's own.")
    store_url: str | None = setting("store_url", "Store URL; default: the store in the data dir.")


class ResumeParams(FlowParams):
    """Rerun what is failed or missing in a data dir, with the parameters of its last ingest."""

    data_dir: str | None = setting("data_dir", "Data directory of the ingest to resume.")
    retry_failed: bool = Field(False, description="Also re-fetch failed rows of done shards.")
    runner: Literal["thread", "process", "dask"] | None = setting(
        "runner", "Where shard tasks run (overrides the recorded ingest's)."
    )
    progress: bool = Field(False, description="Show tqdm bars (for terminals).")
