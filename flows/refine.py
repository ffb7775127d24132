"""The refine flow: an idea in, better prompts out; variants and neighbours as artifacts."""

from __future__ import annotations

from prefect import flow
from prefect.artifacts import create_table_artifact

from promptlake.flows.form import BLANK
from promptlake.flows.params import (
    DataDirOfStore,
    Idea,
    Image,
    Llm,
    MinHeight,
    MinWidth,
    ModelName,
    Origin,
    RefineK,
    RefineN,
    RefineParams,
    SourceSite,
    StoreClip,
    StoreUrl,
    Tool,
)
from promptlake.flows.results import (
    ID_CHARS,
    cut,
    hits_markdown,
    hits_rows,
    md_text,
    publish,
    wrap_cell,
)
from promptlake.tasks.images.thumbnails import Thumb, thumbnails
from promptlake.tasks.query.refine import RefineRequest, RefineResult
from promptlake.tasks.query.search import query_settings
from promptlake.tasks.refine import refine_task


def refine_markdown(result: RefineResult, thumbs: dict[str, Thumb] | None = None) -> list[str]:
    """The variants (with the neighbours each drew from), then the neighbours with thumbnails."""
    rank = {h.id: i for i, h in enumerate(result.sources, 1)}
    lines = [f"idea: **{md_text(result.idea)}** — refiner `{result.refiner}`", ""]
    if result.exact:
        lines += [f"exact prompt from the image's metadata: {md_text(result.exact.prompt)}", ""]
    lines += ["## variants", ""]
    if result.shortfall:  # fewer than asked: say why, as the CLI and the page do
        lines += [
            f"{len(result.variants)} of {result.asked} variants: {md_text(result.shortfall)}",
            "",
        ]
    lines += ["| # | prompt | CLIP tokens | drawn from |", "|---|---|---|---|"]
    for i, v in enumerate(result.variants, 1):
        ranks = [f"#{rank[x]}" for x in v.drawn_from]  # the neighbours' table below
        named = "<br>".join(", ".join(ranks[j : j + 6]) for j in range(0, len(ranks), 6))
        prompt = wrap_cell(v.prompt, width=64, most=8)  # a whole variant: CLIP's 77 tokens
        lines.append(f"| {i} | {prompt} | {v.tokens} | {named or '—'} |")
    return [*lines, "", "## neighbours", "", *hits_markdown(result.sources, thumbs)]


@flow(name="refine", log_prints=True)
def refine_flow(
    idea: Idea = "",
    *,
    n: RefineN = BLANK,
    k: RefineK = BLANK,
    llm: Llm = "auto",
    image: Image = BLANK,
    source_site: SourceSite = BLANK,
    min_width: MinWidth = BLANK,
    min_height: MinHeight = BLANK,
    origin: Origin = BLANK,
    model_name: ModelName = BLANK,
    tool: Tool = BLANK,
    data_dir: DataDirOfStore = BLANK,
    clip_model: StoreClip = BLANK,
    store_url: StoreUrl = BLANK,
) -> dict:
    """Write ``n`` better prompts for an idea (or an image) from its ``k`` nearest prompts."""
    params = RefineParams.of_call(locals())
    settings = query_settings(params.settings())
    req = RefineRequest(
        idea=params.idea,
        image=params.image,
        n=settings.refine_n,
        k=settings.refine_k,
        llm=params.llm,
        filters=params.filters(),
    )
    result = refine_task(req, settings)
    rows = [
        {
            "variant": i,
            "prompt": v.prompt,
            "tokens": v.tokens,
            "drawn_from": ", ".join(cut(x, ID_CHARS) for x in v.drawn_from),
        }
        for i, v in enumerate(result.variants, 1)
    ]
    thumbs = thumbnails([(h.id, h.url) for h in result.sources], settings)
    publish("refine-results", "refine", refine_markdown(result, thumbs), rows, result.idea)
    create_table_artifact(
        hits_rows(result.sources), key="refine-neighbours", description="neighbours drawn from"
    )
    for v in result.variants:
        print(v.prompt)
    return result.to_dict()
