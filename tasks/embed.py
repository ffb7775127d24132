"""embed: CLIP text and image vectors per shard, written atomically into the model's namespace."""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager, nullcontext

import numpy as np
from prefect import task
from prefect.concurrency.sync import concurrency
from prefect.settings import get_current_settings
from tqdm.auto import tqdm

from promptlake.settings import Settings
from promptlake.storage.datadir.image_cache import ImageCache
from promptlake.storage.datadir.layout import DataDir
from promptlake.storage.datadir.markers import Markers
from promptlake.storage.datadir.records import ShardStats
from promptlake.storage.datadir.vectors import ModelMismatch, claim_namespace, write_vectors
from promptlake.tasks.clip.devices import candidate_devices, device_slot
from promptlake.tasks.clip.encoder import (
    ClipEncoder,
    ModelLoadError,
    describe_model,
    get_encoder,
    loaded_devices,
)
from promptlake.tasks.fetch import read_status
from promptlake.tasks.plan import read_shard
from promptlake.tasks.runtime import stop
from promptlake.tasks.runtime.disk import check_space, not_retried

STAGE = "embed"
GPU_LIMIT = "promptlake-gpu"


def embed_markers(data: DataDir, namespace: str) -> Markers:
    """Markers of one model's embeddings: ``state/embed/<namespace>/<shard>.json``."""
    return Markers(data, f"{STAGE}/{namespace}")


def run_shard(
    shard: str,
    data: DataDir,
    settings: Settings,
    *,
    force: bool = False,
    progress: bool = False,
    device: str | None = None,
) -> ShardStats:
    """Embed one fetched shard's prompts and images on ``device`` (default: from the settings).
    A marked shard is skipped (no model work); an interrupted one is redone whole, since its
    files only appear when complete."""
    known = describe_model(settings.clip_model)  # no weights loaded for a finished shard
    finished = embed_markers(data, known.namespace).valid(shard) if known else None
    if finished is not None and not force:
        return finished
    enc = get_encoder(settings.clip_model, device or settings.device, settings.precision)
    ns = enc.info.namespace
    markers = embed_markers(data, ns)
    finished = markers.valid(shard)
    if finished is not None and not force:
        return finished
    if not Markers(data, "fetch").done(shard):
        raise RuntimeError(f"embed {shard}: its fetch has not finished; run fetch first")
    claim_namespace(data, ns, _model_record(enc))
    start = time.perf_counter()
    rows = read_shard(data, shard).select(["id", "prompt"]).to_pydict()
    need = len(rows["id"]) * enc.info.dim * 4 * 2 + (64 << 10)  # text and image vectors
    check_space(data, settings, need=need, what=f"embed shard {shard}")
    text, truncated = enc.encode_text(rows["prompt"], settings.text_batch)
    text_s = time.perf_counter() - start
    stop.check()  # Ctrl-C with shards in threads: the shard's files are written whole or not
    write_vectors(data.vectors(ns, "text", shard), rows["id"], text)
    status = read_status(data, shard).select(["id", "url", "status"]).to_pydict()
    fetched = zip(status["id"], status["url"], status["status"], strict=True)
    ok = [(i, url) for i, url, s in fetched if s == "ok"]
    cache = ImageCache.open(data.image_cache)
    ids, vecs, broken = embed_images(enc, cache, ok, settings, progress=progress, shard=shard)
    cache.release()  # a worker keeps none of the pages it read: flat memory, shard after shard
    write_vectors(data.vectors(ns, "image", shard), ids, vecs)
    n = len(rows["id"])
    counts = {"text": n, "image": len(ids), "no_image": n - len(ok), "image_error": broken}
    stats = ShardStats(
        STAGE,
        shard,
        rows=n,
        ok=n,
        failed=0,
        by_status=counts,
        seconds=round(time.perf_counter() - start, 3),
        extra={**_model_record(enc), "truncated": truncated, "text_seconds": round(text_s, 3)},
    )
    outputs = [data.vectors(ns, kind, shard) for kind in ("text", "image")]
    markers.write(stats, outputs=outputs, inputs=[data.shard_file(shard), data.fetch_status(shard)])
    Markers(data, STAGE).error_path(shard).unlink(missing_ok=True)
    return stats


def _model_record(enc: ClipEncoder) -> dict[str, object]:
    """What made these vectors: kept in the namespace's model.json and every marker."""
    info = enc.info
    return {
        "model": info.name,
        "revision": info.revision,
        "dim": info.dim,
        "max_tokens": info.max_tokens,
        "namespace": info.namespace,
        "device": enc.device,
        "dtype": str(enc.dtype).removeprefix("torch."),
    }


def embed_images(
    enc: ClipEncoder,
    cache: ImageCache,
    ids: list[tuple[str, str]],
    s: Settings,
    *,
    progress: bool,
    shard: str,
) -> tuple[list[str], np.ndarray, int]:
    """Vectors of the cached images of ``(id, url)`` pairs; decoding runs in threads, ahead of
    the model. An image that does not decode, or a cache entry of another URL (another version
    of the row: never embedded as this one's), is counted, not embedded."""
    done_ids: list[str] = []
    parts: list[np.ndarray] = []
    broken = 0
    bar = tqdm(total=len(ids), desc=f"embed {shard}", unit="img", leave=False, disable=not progress)
    with ThreadPoolExecutor(s.decode_workers, thread_name_prefix="decode") as pool:
        for good, crops, bad in _prepared(pool, enc, cache, ids, s):
            stop.check()
            broken += bad
            if good:
                parts.append(enc.encode_pixels(crops))
                done_ids += good
            bar.update(len(good) + bad)
    bar.close()
    vecs = np.concatenate(parts) if parts else np.zeros((0, enc.info.dim), np.float32)
    return done_ids, vecs, broken


def _prepared(
    pool: ThreadPoolExecutor,
    enc: ClipEncoder,
    cache: ImageCache,
    ids: list[tuple[str, str]],
    s: Settings,
) -> Iterator[tuple[list[str], np.ndarray, int]]:
    """Batches of (ids, uint8 crops, unreadable count), at most ``decode_workers + 1`` ahead."""
    chunks = deque(ids[i : i + s.image_batch] for i in range(0, len(ids), s.image_batch))
    ahead: deque[Future] = deque()
    while chunks or ahead:
        while chunks and len(ahead) <= s.decode_workers:
            ahead.append(pool.submit(_decode_chunk, enc, cache, chunks.popleft()))
        yield ahead.popleft().result()


def _decode_chunk(
    enc: ClipEncoder, cache: ImageCache, chunk: list[tuple[str, str]]
) -> tuple[list[str], np.ndarray, int]:
    blobs = cache.images_for(chunk)
    good, crops = [], []
    for rid, _ in chunk:
        try:
            crops.append(enc.prepare_image(blobs[rid].body))
            good.append(rid)
        except (KeyError, OSError, ValueError):
            continue  # a cached image that does not decode: counted, not fatal
    size = (0, enc.crop, enc.crop, 3)
    return good, np.stack(crops) if crops else np.zeros(size, np.uint8), len(chunk) - len(good)


def prefect_server_configured() -> bool:
    """Whether runs report to a lasting Prefect server, not a temporary one started for this
    run: only a lasting server frees the slots of killed runs (its repossessor service)."""
    temporary = os.environ.get("PROMPTLAKE_PREFECT_SERVER_TEMPORARY") == "1"
    return bool(get_current_settings().api.url) and not temporary


@contextmanager
def gpu_slot(settings: Settings) -> Iterator[str]:
    """Hold a device while embedding, and yield it: the Prefect limit ``promptlake-gpu`` (one
    slot per GPU, seen in the UI) when a lasting server is configured, and the first free device
    of this process's candidates under an OS lock per physical GPU (``devices.device_slot``),
    which the kernel frees the moment a holder dies, even by SIGKILL. Devices this process
    already holds a model on come first, so a worker keeps one model copy where it can."""
    outer = (
        concurrency(GPU_LIMIT, occupy=1, lease_duration=60)
        if prefect_server_configured()
        else nullcontext()
    )
    loaded = loaded_devices(settings.clip_model, settings.precision)
    candidates = sorted(candidate_devices(settings.device), key=lambda d: d not in loaded)
    with outer, device_slot(candidates, lock_dir=settings.gpu_lock_dir) as device:
        yield device


# Prefect retries infrastructure faults, not a missing model, a model mix-up or a full disk
@task(name=STAGE, retry_condition_fn=not_retried(ModelLoadError, ModelMismatch))
def embed_task(
    shard: str, data_dir: str, settings: Settings, *, force: bool = False, progress: bool = False
) -> ShardStats:
    """Prefect task: embed one shard holding a GPU slot, so fetch can run ahead on the CPU."""
    data = DataDir(data_dir)
    # failures are recorded at stage level, not per model: status finds them either way
    with Markers(data, STAGE).recording(shard), gpu_slot(settings) as device:
        return run_shard(shard, data, settings, force=force, progress=progress, device=device)
