"""generate: an image per prompt, through a pluggable generator chosen by URL.

``a1111+http://host:7860`` — AUTOMATIC1111's ``/sdapi/v1/txt2img`` HTTP API (also Forge/SD.Next);
``diffusers:<hub name or local dir>`` — a diffusers text-to-image pipeline in this process.
Every image is returned as PNG bytes carrying its prompt in A1111's ``parameters`` chunk.
"""

from __future__ import annotations

import base64
import binascii
import io
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import requests
from PIL import Image, UnidentifiedImageError

from promptlake.tasks.metadata import ImageMeta, read_metadata, save_with_metadata
from promptlake.tasks.net.backoff import TRANSIENT_STATUSES, backoff_delay, retry_after_seconds


class GenerateError(RuntimeError):
    """The generator is misconfigured or failed; the message says which and why."""


@dataclass(frozen=True)
class GenerateOptions:
    steps: int = 20
    width: int = 512
    height: int = 512
    cfg_scale: float = 7.0
    timeout: float = 300.0
    retries: int = 2


def post_with_retries(
    session: requests.Session,
    url: str,
    *,
    body: dict,
    timeout: float,
    retries: int,
    backoff: tuple[float, float],
) -> requests.Response:
    """POST JSON; retry timeouts, dropped connections, 429 and 5xx with exponential backoff and
    jitter (honouring Retry-After). Returns the last reply; a network failure after the last
    retry raises GenerateError."""
    base, most = backoff
    for attempt in range(retries + 1):
        last = attempt == retries
        try:
            reply = session.post(url, json=body, timeout=timeout)
        except requests.RequestException as exc:
            if last:
                raise GenerateError(f"endpoint {url} failed: {exc}") from None
            time.sleep(backoff_delay(attempt + 1, base=base, most=most))
            continue
        if reply.status_code not in TRANSIENT_STATUSES or last:
            return reply
        after = retry_after_seconds(reply.headers.get("Retry-After"))
        time.sleep(backoff_delay(attempt + 1, base=base, most=most, retry_after=after))
    raise AssertionError("unreachable")  # the last attempt returns or raises


class Generator(Protocol):
    name: str

    def generate(self, prompt: str, *, negative: str, seed: int) -> bytes: ...


class A1111Generator:
    """AUTOMATIC1111's web UI API (started with ``--api``)."""

    def __init__(self, base_url: str, options: GenerateOptions) -> None:
        self.base_url, self.options = base_url.rstrip("/"), options
        self.name = f"a1111:{self.base_url}"
        self.session = requests.Session()

    def generate(self, prompt: str, *, negative: str, seed: int) -> bytes:
        o = self.options
        body = {
            "prompt": prompt,
            "negative_prompt": negative,
            "seed": seed,
            "steps": o.steps,
            "width": o.width,
            "height": o.height,
            "cfg_scale": o.cfg_scale,
            "batch_size": 1,
            "n_iter": 1,
        }
        url = f"{self.base_url}/sdapi/v1/txt2img"
        reply = post_with_retries(
            self.session,
            url,
            body=body,
            timeout=o.timeout,
            retries=o.retries,
            backoff=(1.0, 30.0),
        )
        if reply.status_code != 200:
            raise GenerateError(
                f"A1111 generator at {url} answered HTTP {reply.status_code}: {reply.text[:300]}"
                + (" (is the web UI started with --api?)" if reply.status_code == 404 else "")
            )
        try:
            png = base64.b64decode(reply.json()["images"][0])
            img = Image.open(io.BytesIO(png))
            img.load()
        except (
            ValueError,
            KeyError,
            IndexError,
            TypeError,
            binascii.Error,
            UnidentifiedImageError,
            OSError,
        ) as exc:
            raise GenerateError(f"A1111 generator at {url} sent no readable image: {exc}") from None
        if read_metadata(png) is not None:
            return png  # the web UI embeds its own parameters (sampler, model hash…)
        settings = {"Steps": str(o.steps), "Seed": str(seed), "Size": f"{o.width}x{o.height}"}
        return save_with_metadata(img, ImageMeta(prompt, negative, settings))


DIFFUSERS_HELP = (
    "could not load the diffusers pipeline {model!r} ({error}). Offline, point "
    "PROMPTLAKE_GENERATOR at diffusers:<dir> written by save_pretrained(), or pre-fill HF_HOME "
    "and set HF_HUB_OFFLINE=1."
)
_PIPELINES: dict[tuple[str, str, str], tuple[Any, threading.Lock]] = {}
_PIPELINES_LOCK = threading.Lock()
PIPELINE_BUILDS: Counter[tuple[str, str, str]] = Counter()  # (model, device, dtype) → loads


def diffusers_pipeline(model: str, device: str, dtype: str) -> tuple[Any, threading.Lock]:
    """The process-wide text-to-image pipeline for (model, device, dtype): loaded on first use,
    then shared by every generator and input; with a lock, as a pipeline's scheduler keeps
    per-call state and must not run two calls at once."""
    key = (model, device, dtype)
    with _PIPELINES_LOCK:
        if key not in _PIPELINES:
            _PIPELINES[key] = (_load_pipeline(model, device, dtype), threading.Lock())
            PIPELINE_BUILDS[key] += 1
        return _PIPELINES[key]


def _load_pipeline(model: str, device: str, dtype: str) -> Any:
    """``AutoPipelineForText2Image.from_pretrained``: the local cache first (no hub round trips
    offline), then the hub."""
    try:
        import torch
        from diffusers import AutoPipelineForText2Image
    except ImportError:
        raise GenerateError(
            "the diffusers generator needs the diffusers extra: pip install -e '.[diffusers]'"
        ) from None
    if Path(model).is_absolute() and not Path(model).is_dir():
        raise GenerateError(DIFFUSERS_HELP.format(model=model, error="no such directory"))
    error = ""
    for local_only in (True, False):
        try:
            pipe = AutoPipelineForText2Image.from_pretrained(
                model, dtype=getattr(torch, dtype), local_files_only=local_only
            )
            break
        except (OSError, ValueError) as exc:
            error = str(exc).splitlines()[0][:300]
    else:
        raise GenerateError(DIFFUSERS_HELP.format(model=model, error=error))
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


class DiffusersGenerator:
    """A diffusers text-to-image pipeline in this process (the ``diffusers`` extra), loaded
    once per process and model: see ``diffusers_pipeline``."""

    def __init__(self, model: str, options: GenerateOptions, device: str = "auto") -> None:
        from promptlake.tasks.clip.encoder import pick_device

        self.model, self.options = model, options
        self.device = pick_device(device)
        self.dtype = "float16" if self.device.startswith("cuda") else "float32"
        self.name = f"diffusers:{model}"

    def generate(self, prompt: str, *, negative: str, seed: int) -> bytes:
        import torch

        o = self.options
        pipe, busy = diffusers_pipeline(self.model, self.device, self.dtype)
        with busy:
            img = pipe(
                prompt,
                negative_prompt=negative or None,
                num_inference_steps=o.steps,
                guidance_scale=o.cfg_scale,
                width=o.width,
                height=o.height,
                generator=torch.Generator("cpu").manual_seed(seed),
            ).images[0]
        settings = {
            "Steps": str(o.steps),
            "CFG scale": str(o.cfg_scale),
            "Seed": str(seed),
            "Size": f"{o.width}x{o.height}",
            "Model": self.model,
        }
        return save_with_metadata(img, ImageMeta(prompt, negative, settings))


def make_generator(url: str | None, options: GenerateOptions, device: str = "auto"):
    """The generator a URL names, or None when it is empty (no images are generated)."""
    if not url:
        return None
    if url.startswith(("a1111+http://", "a1111+https://")):
        return A1111Generator(url.removeprefix("a1111+"), options)
    if url.startswith("diffusers:") and len(url) > len("diffusers:"):
        return DiffusersGenerator(url.removeprefix("diffusers:"), options, device)
    raise GenerateError(
        f"unknown generator {url!r}: use a1111+http://host:7860 (AUTOMATIC1111 API) or "
        "diffusers:<model name or directory>"
    )
