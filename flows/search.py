"""The search flow: a form in the Prefect UI, results as artifacts with thumbnails."""

from __future__ import annotations

from dataclasses import asdict

from prefect import flow

from promptlake.flows.form import BLANK
from promptlake.flows.params import (
    DataDirOfStore,
    Image,
    MinHeight,
    MinWidth,
    ModelName,
    Origin,
    SearchK,
    SearchParams,
    SourceSite,
    StoreClip,
    StoreUrl,
    Target,
    Text,
    Tool,
    UseMetadata,
)
from promptlake.flows.results import hits_markdown, hits_rows, publish
from promptlake.tasks.images.thumbnails import thumbnails
from promptlake.tasks.query.search import SearchRequest, query_settings
from promptlake.tasks.search import search_task


@flow(name="search", log_prints=True)
def search_flow(
    text: Text = BLANK,
    *,
    target: Target = "prompts",
    k: SearchK = BLANK,
    image: Image = BLANK,
    source_site: SourceSite = BLANK,
    min_width: MinWidth = BLANK,
    min_height: MinHeight = BLANK,
    origin: Origin = BLANK,
    model_name: ModelName = BLANK,
    tool: Tool = BLANK,
    use_metadata: UseMetadata = True,
    data_dir: DataDirOfStore = BLANK,
    clip_model: StoreClip = BLANK,
    store_url: StoreUrl = BLANK,
) -> list[dict]:
    """Nearest prompts or images to a text and/or an image; an image alone asking for prompts
    is a reverse search (its own A1111/ComfyUI metadata first)."""
    params = SearchParams.of_call(locals())
    settings = query_settings(params.settings())
    req = SearchRequest(
        params.text, params.image, params.target, settings.search_k, params.filters()
    )
    hits = search_task(req, settings, use_metadata=params.use_metadata)
    query = " + ".join(x for x in (params.text, params.image and f"image {params.image}") if x)
    lines = [f"**{query}** → {params.target}, k={req.k}", ""]
    if hits and hits[0].origin.startswith("metadata:"):
        lines.insert(1, f"exact prompt from the image's {hits[0].origin[9:]} metadata")
    table = hits_markdown(hits, thumbnails([(h.id, h.url) for h in hits], settings))
    publish("search-results", "search", lines + table, hits_rows(hits), query)
    return [asdict(h) for h in hits]
