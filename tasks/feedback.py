"""feedback: weakly served searches and given ideas → refined prompts (and generated images),
embedded and written back to the store with ``origin = 'feedback'`` and their lineage.

Each input is one unit of work keyed by its normalised text: its rows carry the shard name
``feedback-<key>`` (so a rerun replaces, never duplicates) and a marker
``state/feedback/<key>.json`` records it as done (so a repeated run skips it).
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
from PIL import Image
from prefect import task

from promptlake.settings import LLMChoice, Settings
from promptlake.storage.datadir.layout import DataDir, atomic_path
from promptlake.storage.datadir.markers import Markers
from promptlake.storage.datadir.records import ShardStats
from promptlake.storage.datadir.vectors import list_column
from promptlake.tasks.clip.encoder import current_namespace, get_encoder
from promptlake.tasks.images.generate import GenerateOptions, Generator, make_generator
from promptlake.tasks.metadata import read_metadata
from promptlake.tasks.query.phrases import normalize
from promptlake.tasks.query.refine import RefineRequest, Variant, refine
from promptlake.tasks.query.search import image_vectors
from promptlake.tasks.runtime.turn import store_turn

STAGE = "feedback"


@dataclass(frozen=True)
class FeedbackInput:
    """An idea to improve the store for: a weak search's query, or an idea given by hand."""

    text: str
    trigger: str  # "search@<time>" (best distance) or "idea"

    @property
    def key(self) -> str:
        return hashlib.sha256(normalize(self.text).encode()).hexdigest()[:16]


def pick_inputs(
    data: DataDir, settings: Settings, *, ideas: list[str], limit: int, searches: bool = True
) -> list[FeedbackInput]:
    """Given ideas first, then recent weak searches; without those already done; at most
    ``limit``."""
    ns, model = current_namespace(data, settings)
    weak = []
    if searches:
        with store_turn(settings, "feedback: weak searches") as store:
            store.ensure_schema(ns, int(model["dim"]))
            weak = store.weak_searches(
                since_hours=settings.feedback_since_hours,
                min_distance=settings.feedback_min_distance,
                limit=max(limit * 4, 50),
            )
    candidates = [FeedbackInput(i.strip(), "idea") for i in ideas if i and i.strip()]
    for query, best, at in weak:
        shown = "none" if best is None else f"{best:.3f}"
        candidates.append(FeedbackInput(query, f"search@{at} best={shown}"))
    markers, seen, out = Markers(data, STAGE), set(), []
    for inp in candidates:
        if inp.key in seen or markers.done(inp.key):
            continue
        seen.add(inp.key)
        out.append(inp)
    return out[:limit]


@dataclass(frozen=True)
class FeedbackOptions:
    """Per input: variants to write, neighbours to draw from, the refiner, whether to draw."""

    n: int = 3
    k: int = 12
    llm: LLMChoice = "auto"
    generate: bool = False


def run_input(
    inp: FeedbackInput, data: DataDir, settings: Settings, opts: FeedbackOptions
) -> ShardStats:
    """Refine one input, embed the variants (and generated images) and write them back."""
    markers = Markers(data, STAGE)
    finished = markers.read(inp.key)
    if finished is not None:
        return finished
    start, shard = time.perf_counter(), f"{STAGE}-{inp.key}"
    gen = feedback_generator(settings) if opts.generate else None  # misconfigured: fail first
    ns, model = current_namespace(data, settings)
    enc = get_encoder(settings.clip_model, settings.device, settings.precision)  # no turn held
    with store_turn(settings, f"feedback {inp.key}: clear") as store:
        store.ensure_schema(ns, int(model["dim"]))
        for table in ("prompts", "images"):  # a retry must not draw on its own earlier rows
            store.load_shard(table, shard, pa.table({}))
    result = refine(  # its retrieval is a turn of its own; the LLM answers with no turn held
        RefineRequest(idea=inp.text, n=opts.n, k=opts.k, llm=opts.llm, log=False), data, settings
    )
    ids = [
        f"fb-{hashlib.sha256((inp.key + v.prompt).encode()).hexdigest()[:16]}"
        for v in result.variants
    ]
    images = _generate(gen, result.variants, ids, data, settings) if gen else {}
    prompts = _rows(inp, result.variants, ids, images, ns)
    prompts = prompts.append_column(
        "prompt_vector", list_column(enc.encode_text([v.prompt for v in result.variants])[0])
    )
    image_rows = _image_rows(prompts, images, enc, settings)
    with store_turn(settings, f"feedback {inp.key}: write") as store:  # the input's rows at once
        store.load_shard("prompts", shard, prompts)
        store.load_shard("images", shard, image_rows)
    stats = ShardStats(
        STAGE,
        inp.key,
        rows=len(ids),
        ok=len(ids),
        by_status={"prompts": len(ids), "images": len(images)},
        seconds=round(time.perf_counter() - start, 3),
        extra={
            "input": inp.text,
            "trigger": inp.trigger,
            "refiner": result.refiner,
            "ids": ids,
            "prompts": [v.prompt for v in result.variants],
        },
    )
    markers.write(stats)
    return stats


def feedback_generator(settings: Settings) -> Generator:
    """The configured generator. Cheap to make per input: a diffusers pipeline is loaded once
    per process (``generate.diffusers_pipeline``), not once per generator."""
    if not settings.generator:
        raise ValueError("generate needs a generator: set PROMPTLAKE_GENERATOR")
    options = GenerateOptions(
        settings.generator_steps, settings.generator_width, settings.generator_height
    )
    return make_generator(settings.generator, options, settings.device)


def _generate(
    gen: Generator, variants: list[Variant], ids: list[str], data: DataDir, settings: Settings
) -> dict[str, tuple[Path, bytes]]:
    """One image per variant, kept as a PNG (prompt in its metadata) under feedback/images/."""
    out = {}
    for v, rid in zip(variants, ids, strict=True):
        seed = int(rid[3:11], 16)  # from the id: a rerun draws the same image
        png = gen.generate(v.prompt, negative=settings.feedback_negative, seed=seed)
        path = data.feedback_images / f"{rid}.png"
        with atomic_path(path) as tmp:
            tmp.write_bytes(png)
        out[rid] = (path, png)
    return out


def _rows(
    inp: FeedbackInput,
    variants: list[Variant],
    ids: list[str],
    images: dict[str, tuple[Path, bytes]],
    ns: str,
) -> pa.Table:
    sizes = {rid: Image.open(io.BytesIO(png)).size for rid, (_, png) in images.items()}
    made = {rid: read_metadata(png) for rid, (_, png) in images.items()}  # the generator's words
    n = len(ids)

    def said(rid: str, what: str, empty: str = "") -> str:
        meta = made.get(rid)
        value = getattr(meta, what) if meta else None
        if isinstance(value, dict):
            return json.dumps(value, sort_keys=True, ensure_ascii=False)
        return value or empty

    return pa.table(
        {
            "id": ids,
            "prompt": [v.prompt for v in variants],
            "url": [images[i][0].resolve().as_uri() if i in images else "" for i in ids],
            "width": pa.array([sizes.get(i, (0, 0))[0] for i in ids], pa.uint32()),
            "height": pa.array([sizes.get(i, (0, 0))[1] for i in ids], pa.uint32()),
            "source_site": ["feedback"] * n,
            "negative_prompt": [said(i, "negative_prompt") for i in ids],
            "model_name": [said(i, "model_name") for i in ids],
            "tool": [said(i, "tool") for i in ids],
            "settings": [said(i, "settings", "{}") for i in ids],
            "origin": ["feedback"] * n,
            "parent_ids": [v.drawn_from for v in variants],
            "trigger": [f"{inp.trigger}: {inp.text}"[:2000]] * n,
            "shard": [f"{STAGE}-{inp.key}"] * n,
            "model": [ns] * n,
        }
    )


def _image_rows(prompts: pa.Table, images: dict, enc, settings: Settings) -> pa.Table:
    """The ``images`` rows of the variants that got an image (none without a generator)."""
    keep = [i for i, rid in enumerate(prompts["id"].to_pylist()) if rid in images]
    picked = prompts.take(pa.array(keep, pa.int64())).drop_columns(["prompt_vector"])
    bodies = [images[rid][1] for rid in picked["id"].to_pylist()]
    return picked.append_column("image_vector", list_column(image_vectors(bodies, enc, settings)))


@task(name=STAGE)
def feedback_task(
    inp: FeedbackInput, data_dir: str, settings: Settings, opts: FeedbackOptions
) -> ShardStats:
    """Prefect task: one input (short turns with the store: never during the LLM call, image
    generation or model loading)."""
    with Markers(DataDir(data_dir), STAGE).recording(inp.key):
        return run_input(inp, DataDir(data_dir), settings, opts)
