"""All configuration in one place: environment variables with the ``PROMPTLAKE_`` prefix."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# which refiner writes a refine's variants: offline (drawn from the neighbours), openai (the
# configured OpenAI-compatible endpoint), auto (openai when PROMPTLAKE_LLM_BASE_URL is set)
LLMChoice = Literal["auto", "offline", "openai"]


class Settings(BaseSettings):
    """Settings for every stage; each field can be set as ``PROMPTLAKE_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="PROMPTLAKE_", extra="ignore")

    data_dir: Path = Field(Path("./data"), description="Where all stage outputs live.")
    shard_size: int = Field(1000, ge=1, le=1_000_000, description="Valid rows per shard.")
    shard_concurrency: int = Field(2, ge=1, le=64, description="Shards processed at once.")
    runner: str = Field(
        "process",
        pattern="^(thread|process|dask)$",
        description="Where shard tasks run: threads of the flow's process, worker processes, "
        "or a Dask cluster.",
    )
    dask_address: str | None = Field(
        None, description="Dask scheduler (tcp://host:8786) for runner dask; none: a local one."
    )
    ingest_wait: float | None = Field(
        None,
        ge=0,
        le=7 * 24 * 3600,
        description="Seconds an ingest waits while another holds its data dir; unset: 0 in "
        "commands (say who holds it at once), 600 in flow runs.",
    )
    task_retries: int = Field(2, ge=0, le=20, description="Prefect retries of a failed shard.")
    task_retry_delay: float = Field(10.0, ge=0, description="Seconds between those retries.")

    watch_folder: Path | None = Field(
        None, description="A folder of generated images the ingest-folder deployment follows."
    )
    watch_interval: float = Field(
        300.0, ge=1, description="Seconds between scans of the watched folder."
    )
    watch_cron: str | None = Field(
        None, description="A cron schedule for the watched folder instead of the interval."
    )
    # fetch
    fetch_workers: int = Field(32, ge=1, le=512, description="HTTP threads per shard.")
    fetch_per_host: int = Field(16, ge=1, le=512, description="Concurrent requests per host.")
    connect_timeout: float = Field(5.0, gt=0, description="Seconds to open a connection.")
    read_timeout: float = Field(15.0, gt=0, description="Seconds between bytes of a reply.")
    fetch_deadline: float = Field(60.0, gt=0, description="Seconds for a whole reply body.")
    max_body_bytes: int = Field(20 * 2**20, gt=0, description="Largest image body accepted.")
    max_redirects: int = Field(5, ge=0, le=30)
    fetch_retries: int = Field(3, ge=0, le=10, description="Retries on timeout, 429 and 5xx.")
    backoff_base: float = Field(0.5, ge=0, description="First retry delay in seconds.")
    backoff_max: float = Field(30.0, ge=0, description="Longest delay between retries.")
    host_failure_threshold: int = Field(
        10,
        ge=1,
        le=10_000,
        description="Distinct URLs of one host failing to connect in a row (timeouts, refused, "
        "resets) before that host is marked down for the run.",
    )
    host_quiet_seconds: float = Field(
        30.0,
        ge=0,
        description="How long a host must have been silent (no reply at all) before failures "
        "mark it down: a live host that stalls for a moment is not a dead one.",
    )
    host_probe_seconds: float = Field(
        30.0, gt=0, description="How often a host marked down gets one trial request."
    )
    max_image_pixels: int = Field(
        64_000_000, gt=0, description="Decoded pixel limit (decompression-bomb guard)."
    )
    image_size: int = Field(256, ge=16, le=4096, description="Shorter side after resizing.")
    resize_filter: str = Field(
        "box",
        pattern="^(box|bilinear|bicubic|lanczos)$",
        description="Downscale filter; box is area averaging (img2dataset's INTER_AREA) and "
        "the cheapest antialiasing one: about 15% less fetch CPU than bilinear.",
    )
    image_format: str = Field("jpeg", pattern="^(jpeg|webp|png)$")
    image_quality: int = Field(90, ge=1, le=100)
    allow_file_urls: bool = Field(False, description="Allow file:// image URLs (local data).")
    user_agent: str = Field("promptlake/0.1 (+https://github.com/promptlake)")
    # embed
    clip_model: str = Field(
        "openai/clip-vit-base-patch32", description="CLIP hub name or local save_pretrained dir."
    )
    device: str = Field("auto", pattern="^(auto|cpu|mps|cuda(:[0-9]+)?)$")
    precision: str = Field(
        "auto",
        pattern="^(auto|fp32|fp16|bf16)$",
        description="auto: fp16 on CUDA, bf16 on CPUs with native bf16, else fp32.",
    )
    text_batch: int = Field(
        128, ge=1, le=65536, description="Prompts per model call (length-sorted first)."
    )
    image_batch: int = Field(64, ge=1, le=8192, description="Images per model call.")
    decode_workers: int = Field(4, ge=1, le=128, description="Image decode threads per shard.")
    gpu_slots: int = Field(
        1, ge=1, le=64, description="Embed shards at once (one per GPU): a Prefect limit."
    )
    gpu_lock_dir: Path | None = Field(
        None,
        description="Folder of the per-GPU lock files (default: the system temp dir); every "
        "process sharing these GPUs, in any container, must see the same folder.",
    )
    # store
    store_url: str | None = Field(
        None, description="chdb:///path (default: DATA_DIR/store), clickhouse://… or myscale://…"
    )
    store_wait: float | None = Field(
        None,
        ge=0,
        description="Seconds to wait for an embedded store held by another process; unset: "
        "600 in flows, 30 in interactive commands.",
    )
    hnsw_quantization: str = Field("bf16", pattern="^(f64|f32|f16|bf16|i8|b1)$")
    hnsw_m: int = Field(32, ge=4, le=256, description="HNSW neighbours per node.")
    hnsw_ef_construction: int = Field(128, ge=8, le=4096)
    # search and refine
    search_k: int = Field(10, ge=1, le=1000, description="Hits a search returns.")
    llm_base_url: str | None = Field(
        None,
        description="OpenAI-compatible endpoint (https://api.openai.com/v1, "
        "http://localhost:11434/v1 for Ollama, a vLLM or llama.cpp server); none: offline refiner.",
    )
    llm_api_key: SecretStr = Field(SecretStr(""), description="Bearer key; never logged.")
    llm_model: str = Field("gpt-4o-mini", description="Chat model name at that endpoint.")
    llm_timeout: float = Field(60.0, gt=0, description="Seconds per LLM request.")
    llm_retries: int = Field(3, ge=0, le=10, description="Retries on 429, 5xx and timeouts.")
    llm_temperature: float = Field(0.8, ge=0, le=2)
    refine_k: int = Field(12, ge=1, le=200, description="Neighbours a refine draws from.")
    refine_n: int = Field(3, ge=1, le=20, description="Variants a refine writes.")
    # feedback
    feedback_cron: str = Field("0 3 * * *", description="When the feedback deployment runs.")
    feedback_since_hours: float = Field(
        24.0, gt=0, le=24 * 365, description="Look back this far for weakly served searches."
    )
    feedback_min_distance: float = Field(
        0.25, ge=0, le=2, description="A search whose best hit is this far (cosine) is weak."
    )
    feedback_max_inputs: int = Field(20, ge=0, le=1000, description="Inputs per feedback run.")
    feedback_negative: str = Field(
        "blurry, lowres, watermark, text", description="Negative prompt for generated images."
    )
    generator: str | None = Field(
        None,
        description="Image generator for feedback: a1111+http://host:7860 or "
        "diffusers:MODEL; none: no images.",
    )
    generator_steps: int = Field(20, ge=1, le=200)
    generator_width: int = Field(512, ge=64, le=2048)
    generator_height: int = Field(512, ge=64, le=2048)
    lmdb_map_size: int = Field(1 << 30, gt=0, description="Initial LMDB map size; it grows.")
    min_free_mb: float = Field(
        64.0,
        ge=0,
        description="Free space (MB) every write stage leaves on the disk of the data dir and "
        "the store, beyond what it is about to write; 0: no check.",
    )
    # search page (promptlake ui)
    ui_host: str = Field(
        "127.0.0.1", description="Address the search page binds; another is the user's choice."
    )
    ui_port: int = Field(8700, ge=1, le=65535, description="Port of the search page.")
    ui_url: str | None = Field(
        None,
        pattern=r"^https?://[^\s]+$",
        description="Where the search page is reachable (http://host:8700): the Prefect UI's "
        "results link their thumbnails there; none: small inline thumbnails.",
    )
    ui_k: int = Field(24, ge=1, le=200, description="Hits per search on the page (its k box).")
    ui_torch_threads: int = Field(
        1,
        ge=0,
        le=1024,
        description="CPU threads torch uses in the page's process (0: one per core); it encodes "
        "one short query at a time, and one thread does not fight its web and store threads.",
    )
    ui_store_wait: float = Field(
        3.0, ge=0, le=600, description="Seconds a page request waits for the store's turn."
    )
    ui_refine_slots: int = Field(
        2,
        ge=1,
        le=64,
        description="Refines the search page lets wait on the LLM at once (searches never wait "
        "for them); one more answers 503.",
    )
    ui_max_upload_bytes: int = Field(
        10 * 2**20, gt=0, description="Largest image the search page accepts."
    )
    ui_max_upload_pixels: int = Field(
        40_000_000, gt=0, description="Largest image, in pixels, the search page decodes."
    )

    @field_validator("clip_model")
    @classmethod
    def _model_path(cls, name: str) -> str:
        return local_model_path(name)

    def store_wait_for(self, *, interactive: bool) -> float:
        """How long to wait for the embedded store: PROMPTLAKE_STORE_WAIT, else 30 s where a
        person waits (a command, the search page) and 10 min for flows, which may queue behind
        another run's index build."""
        if self.store_wait is not None:
            return self.store_wait
        return 30.0 if interactive else 600.0

    def ingest_wait_for(self, *, interactive: bool) -> float:
        """How long an ingest waits for its data dir: PROMPTLAKE_INGEST_WAIT, else none at the
        terminal (the person hears at once who holds it, and may pass --wait) and 10 min for
        flow runs started from Prefect (a scheduled one never waits: it skips)."""
        if self.ingest_wait is not None:
            return self.ingest_wait
        return 0.0 if interactive else 600.0


def min_free_bytes(settings: Settings) -> int:
    """The free-space floor of every write, in bytes."""
    return int(settings.min_free_mb * (1 << 20))


# hub model names: "name" or "owner/name"; anything else is a local path
HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def local_model_path(name: str) -> str:
    """A model name as it is recorded and passed on: a local folder (``save_pretrained``) as
    its absolute path, so another process in another folder finds it; a hub name unchanged."""
    path = Path(name).expanduser()
    return str(path.resolve()) if path.is_dir() else name


def store_url(settings: Settings) -> str:
    """The configured store, or the embedded chDB store inside the data dir."""
    return settings.store_url or f"chdb://{Path(settings.data_dir).resolve() / 'store'}"


def get_settings(**overrides: Any) -> Settings:
    """Settings from the environment, with explicit (non-None) overrides applied on top."""
    clean = {k: v for k, v in overrides.items() if v is not None}
    return Settings(**clean)
