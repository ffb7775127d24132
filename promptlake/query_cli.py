"""The query commands of ``promptlake``: ``search`` (and reverse search) and ``refine``."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from typing import get_args

from promptlake.argtypes import number
from promptlake.settings import LLMChoice
from promptlake.terminal import shorten

DATA_DIR_HELP = "data directory (default: $PROMPTLAKE_DATA_DIR or ./data)"


def _filter_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--source-site", help="only rows from this site")
    p.add_argument("--min-width", type=int, help="only images at least this wide")
    p.add_argument("--min-height", type=int, help="only images at least this tall")
    p.add_argument("--origin", help="only rows of this origin (dataset, feedback)")
    p.add_argument(
        "--model-name", help="only images made with a model whose name contains this (e.g. xl)"
    )
    p.add_argument("--tool", help="only images made with this tool (a1111, comfyui, …)")
    p.add_argument("--data-dir", help=DATA_DIR_HELP)
    p.add_argument("--model", help="CLIP model (default: the one the store was built with)")
    p.add_argument("--json", action="store_true", help="print JSON")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Register ``search`` and ``refine``."""
    p = sub.add_parser("search", help="nearest prompts or images to a text and/or an image")
    p.add_argument("text", nargs="?", help="what to look for")
    p.add_argument(
        "--image",
        help="an image path or http(s) URL; alone, with --target prompts, a reverse search: "
        "the prompt in the image's own metadata when it has one, else CLIP neighbours",
    )
    p.add_argument(
        "--target",
        choices=["prompts", "images"],
        default="prompts",
        help="return prompts (default) or images",
    )
    p.add_argument(
        "-k", type=number("search_k"), help="how many hits (default $PROMPTLAKE_SEARCH_K or 10)"
    )
    p.add_argument(
        "--no-metadata", action="store_true", help="reverse search by CLIP even with metadata"
    )
    _filter_args(p)
    r = sub.add_parser("refine", help="better prompts for an idea, drawn from the nearest ones")
    r.add_argument("idea", nargs="?", default="", help="a rough idea, e.g. 'a cat on a sofa'")
    r.add_argument("--image", help="an image (path or URL) to refine from, or to add to the idea")
    r.add_argument(
        "-n", type=number("refine_n"), help="variants to write (default $PROMPTLAKE_REFINE_N or 3)"
    )
    r.add_argument(
        "-k", type=number("refine_k"), help="neighbours to draw from ($PROMPTLAKE_REFINE_K or 12)"
    )
    add_llm_flag(r)
    _filter_args(r)


def add_llm_flag(p: argparse.ArgumentParser) -> None:
    """``--llm``, the refiner to use (refine, feedback)."""
    p.add_argument(
        "--llm",
        choices=get_args(LLMChoice),
        default="auto",
        help="offline: deterministic, from the neighbours' phrases; openai: an OpenAI-compatible "
        "endpoint (PROMPTLAKE_LLM_BASE_URL); auto (default): openai when configured",
    )


def _params(cls, args: argparse.Namespace, *, store: bool = True, **fields):
    """The flow's parameter model from the flags (the CLI resolves settings like a flow run),
    checked before any model loads: a data dir with a store when ``store``."""
    from promptlake import preflight

    common: tuple[str, ...] = ("image", "source_site", "min_width", "min_height", "origin")
    common += ("data_dir", "tool")
    common += ("model_name",)
    made = preflight.params(
        cls, clip_model=args.model, **{k: getattr(args, k) for k in common}, **fields
    )
    if args.image:
        preflight.check_image(args.image)
    if store:
        preflight.check_data_dir(made.settings().data_dir, needs="store")
    return made


def cmd_search(args: argparse.Namespace) -> int:
    from promptlake import preflight
    from promptlake.flows.params import SearchParams

    if not (args.text and args.text.strip()) and not args.image:
        raise preflight.InputError("give a TEXT to search for, an --image, or both")
    # an image alone may be answered from its own metadata, with no store at all
    by_metadata = args.image and not args.text and args.target == "prompts"
    store = not (by_metadata and not args.no_metadata)
    params = _params(SearchParams, args, store=store, text=args.text, target=args.target, k=args.k)
    from promptlake.tasks.query.search import SearchRequest, query_settings, run

    settings = query_settings(params.settings())
    req = SearchRequest(args.text, args.image, args.target, settings.search_k, params.filters())
    hits = run(req, settings, use_metadata=not args.no_metadata)
    if args.json:
        print(json.dumps([asdict(h) for h in hits], indent=2))
        return 0
    if not hits:
        print("no hits")
    elif not hits[0].origin.startswith("metadata:"):
        print(DISTANCE_HEADER)
    for rank, h in enumerate(hits, 1):
        if h.origin.startswith("metadata:"):
            print(format_exact(h.prompt, asdict(h), h.origin.removeprefix("metadata:")))
            continue
        size = f" {h.width}x{h.height}" if h.width and h.height else ""  # 0: no image (feedback)
        print(f"{rank:3}. {max(h.distance, 0.0):.4f}  [{h.source_site}{size}] {h.id}")
        print(f"     {shorten(h.prompt, 160)}")
        if h.url:
            print(f"     {h.url}")
        made = [
            f"model {h.model_name}" if h.model_name else "",
            h.tool,
            h.negative_prompt and f"negative: {shorten(h.negative_prompt, 100)}",
        ]
        if any(made):
            print("     " + "; ".join(m for m in made if m))
        if h.extra.get("trigger"):
            parents = ", ".join(h.extra.get("parent_ids", [])) or "none"
            print(f"     lineage: {shorten(h.extra['trigger'], 120)}; drawn from {parents}")
    return 0


DISTANCE_HEADER = "rank  distance (cosine: 0 is the same, lower is closer)  [site, size] id"


def format_exact(prompt: str, extra: dict, tool: str) -> str:
    """An exact prompt read from an image's metadata, for a terminal."""
    lines = [f"exact prompt (from the image's {tool} metadata):", f"  {prompt}"]
    if extra.get("negative_prompt"):
        lines.append(f"  negative: {extra['negative_prompt']}")
    if extra.get("settings"):
        lines.append("  " + ", ".join(f"{k}: {v}" for k, v in extra["settings"].items()))
    return "\n".join(lines)


def cmd_refine(args: argparse.Namespace) -> int:
    from promptlake.flows.params import RefineParams
    from promptlake.storage.datadir.layout import DataDir

    params = _params(RefineParams, args, idea=args.idea or "", n=args.n, k=args.k, llm=args.llm)
    from promptlake.tasks.query.refine import RefineRequest, refine
    from promptlake.tasks.query.search import query_settings

    settings = query_settings(params.settings())
    req = RefineRequest(
        idea=params.idea,
        image=params.image,
        n=settings.refine_n,
        k=settings.refine_k,
        llm=params.llm,
        filters=params.filters(),
    )
    result = refine(req, DataDir(settings.data_dir), settings)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
        return 0
    print(format_refine(result))
    return 0


def format_refine(result) -> str:
    """Variants with the neighbours each drew from, then the neighbours, for a terminal."""
    rank = {h.id: i for i, h in enumerate(result.sources, 1)}
    lines = []
    if result.exact:
        lines += [format_exact(result.exact.prompt, asdict(result.exact), result.exact.tool), ""]
    lines.append(f"idea: {result.idea}  (refiner: {result.refiner})")
    for i, v in enumerate(result.variants, 1):
        lines.append(f"{i:3}. {v.prompt}")
        named = ", ".join(f"#{rank[x]} {x}" for x in v.drawn_from) or "none"
        lines.append(f"     {v.tokens} CLIP tokens; drawn from: {named}")
    lines.append(f"\nneighbours ({len(result.sources)}; cosine distance, lower is closer):")
    for i, h in enumerate(result.sources, 1):
        lines.append(f"  #{i:<3} {max(h.distance, 0.0):.4f} {h.id}: {shorten(h.prompt, 140)}")
    return "\n".join(lines)
