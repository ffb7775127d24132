"""The query commands of ``promptlake``: ``search`` (and reverse search) and ``refine``."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path
from typing import get_args

from promptlake.argtypes import number
from promptlake.settings import LLMChoice
from promptlake.terminal import shorten

DATA_DIR_HELP = "data directory (default: $PROMPTLAKE_DATA_DIR or ./data)"
PAGE_TIMEOUT = 60.0  # seconds for a page's answer: it waits for the store a few seconds at most


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
    from promptlake.tasks.query.resolve import query_settings

    if not (args.text and args.text.strip()) and not args.image:
        raise preflight.InputError("give a TEXT to search for, an --image, or both")
    # an image alone may be answered from its own metadata, with no store at all
    by_metadata = args.image and not args.text and args.target == "prompts"
    store = not (by_metadata and not args.no_metadata)
    params = _params(SearchParams, args, store=store, text=args.text, target=args.target, k=args.k)
    settings = query_settings(params.settings())
    hits = _search(args, params, settings, by_metadata=by_metadata and not args.no_metadata)
    if args.json:
        print(json.dumps([asdict(h) for h in hits], indent=2))
        return 0
    print_hits(hits)
    return 0


def _search(args: argparse.Namespace, params, settings, *, by_metadata: bool) -> list:
    """The hits: an image's own metadata when it is asked for and has some (no model, no
    store), else a running search page's answer, else this process's own search."""
    from promptlake.storage.datadir.layout import DataDir
    from promptlake.ui.client import PageUnavailable

    image = _image(args.image, settings)
    if by_metadata and image:
        from promptlake.tasks.metadata import read_metadata

        exact = read_metadata(image[1])
        if exact is not None:
            return [exact.as_hit(args.image)]
    page = _page(args, settings)
    if page is not None:
        try:
            return page.search(
                text=args.text, image=image, target=args.target, k=settings.search_k,
                filters=params.filters(), timeout=PAGE_TIMEOUT,
            )  # fmt: skip
        except PageUnavailable as exc:
            _say(args)(f"promptlake: {exc}: searching here")
    from promptlake.tasks.query.search import SearchRequest, search

    req = SearchRequest(args.text, args.image, args.target, settings.search_k, params.filters())
    req.image_body = image[1] if image else None
    return search(req, DataDir(settings.data_dir), settings)


def _image(source: str | None, settings) -> tuple[str, bytes] | None:
    """An --image's name and bytes, read (or fetched) once."""
    if not source:
        return None
    from promptlake.tasks.query.resolve import read_image

    return Path(source).name or "image", read_image(source, settings)


def _say(args: argparse.Namespace):
    from promptlake import terminal

    return terminal.say if getattr(args, "verbose", False) else (lambda line: None)


def _page(args: argparse.Namespace, settings):
    """A running search page on the same data dir and settings, or None (say why under -v)."""
    from promptlake.ui.client import find_page

    say = _say(args)
    page = find_page(settings, say)
    if page is not None:
        say(f"promptlake: asking the search page at {page.url} (pid {page.pid})")
    return page


def print_hits(hits: list) -> None:
    """Search hits for a terminal: rank, distance, site and size, id, prompt, how it was made."""
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
    from promptlake.tasks.query.resolve import query_settings

    params = _params(RefineParams, args, idea=args.idea or "", n=args.n, k=args.k, llm=args.llm)
    settings = query_settings(params.settings())
    result = _refine(args, params, settings)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(format_refine(result))
    return 0


def _refine(args: argparse.Namespace, params, settings) -> dict:
    """``RefineResult.to_dict()``: from a running search page when there is one, else here."""
    from promptlake.storage.datadir.layout import DataDir
    from promptlake.ui.client import PageUnavailable

    image = _image(params.image, settings)
    page = _page(args, settings)
    if page is not None:
        wait = settings.llm_timeout * (settings.llm_retries + 1) + PAGE_TIMEOUT
        try:
            return page.refine(
                idea=params.idea, image=image, n=settings.refine_n, k=settings.refine_k,
                llm=params.llm, filters=params.filters(), timeout=wait,
            )  # fmt: skip
        except PageUnavailable as exc:
            _say(args)(f"promptlake: {exc}: refining here")
    from promptlake.tasks.query.refine import RefineRequest, refine

    req = RefineRequest(
        idea=params.idea,
        image=params.image,
        n=settings.refine_n,
        k=settings.refine_k,
        llm=params.llm,
        filters=params.filters(),
        image_body=image[1] if image else None,
    )
    return refine(req, DataDir(settings.data_dir), settings).to_dict()


def format_refine(result: dict) -> str:
    """Variants with the neighbours each drew from, then the neighbours, for a terminal."""
    sources, variants, exact = result["sources"], result["variants"], result.get("exact")
    rank = {h["id"]: i for i, h in enumerate(sources, 1)}
    lines = []
    if exact:
        lines += [format_exact(exact["prompt"], exact, exact["tool"]), ""]
    lines.append(f"idea: {result['idea']}  (refiner: {result['refiner']})")
    if result.get("shortfall"):
        lines.append(f"{len(variants)} of {result['asked']} variants: {result['shortfall']}")
    for i, v in enumerate(variants, 1):
        lines.append(f"{i:3}. {v['prompt']}")
        named = ", ".join(f"#{rank[x]} {x}" for x in v["drawn_from"]) or "none"
        lines.append(f"     {v['tokens']} CLIP tokens; drawn from: {named}")
    lines.append(f"\nneighbours ({len(sources)}; cosine distance, lower is closer):")
    for i, h in enumerate(sources, 1):
        lines.append(
            f"  #{i:<3} {max(h['distance'], 0.0):.4f} {h['id']}: {shorten(h['prompt'], 140)}"
        )
    return "\n".join(lines)
