"""Artifacts that show search and refine results in the Prefect UI: markdown with thumbnails
and a table, cut to fit the artifact panel, so a person can use the UI alone."""

from __future__ import annotations

import html
import textwrap
from urllib.parse import urlparse

from prefect.artifacts import create_markdown_artifact, create_table_artifact

from promptlake.storage.store import Hit
from promptlake.tasks.images.thumbnails import INLINE_PX, Thumb

# The artifact panel is about 870 px wide on a 1440 px screen and its table cells never wrap:
# long text is cut with "…" or broken into lines here (the full values are in the flow run's
# result and on the search page).
PROMPT_LINE, PROMPT_LINES = 56, 3
PROMPT_CHARS, SITE_CHARS, ID_CHARS, NAME_CHARS = 56, 16, 10, 20


def cut(text: str, most: int) -> str:
    """``text`` on one line, at most ``most`` characters, ending in "…" when cut."""
    text = " ".join(str(text).split())
    return text if len(text) <= most else text[: most - 1].rstrip() + "…"


def md_text(text: str, most: int = 100_000) -> str:
    """Text safe inside a markdown table cell or line (no HTML, no cell breaks)."""
    return html.escape(cut(text, most), quote=False).replace("|", "\\|")


def wrap_cell(text: str, width: int = PROMPT_LINE, most: int = PROMPT_LINES) -> str:
    """Text for a table cell as at most ``most`` lines of ``width`` characters."""
    parts = textwrap.wrap(" ".join(str(text).split()), width, max_lines=most, placeholder=" …")
    return "<br>".join(md_text(p) for p in parts)


def attr(value: str) -> str:
    """A value safe inside a double-quoted HTML attribute within a markdown table cell."""
    return html.escape(value, quote=True).replace("|", "&#124;")


def short_id(rid: str) -> str:
    """An id that fits its column; a cut one has the full id as its tooltip."""
    if len(rid) <= ID_CHARS:
        return f"`{md_text(rid)}`"
    return f'<code title="{attr(rid)}">{md_text(rid, ID_CHARS)}</code>'


def thumbnail(hit: Hit, thumb: Thumb | None, width: int = INLINE_PX) -> str:
    """The hit's picture: from the image cache (``thumb``), else its web URL; a local file that
    never reached the cache shows its name (browsers will not load ``file://``)."""
    alt = attr(cut(hit.prompt or hit.id, 80))
    if thumb is not None:
        img = f'<img src="{attr(thumb.src)}" alt="{alt}" width="{width}"/>'
        return f'<a href="{attr(thumb.link)}">{img}</a>' if thumb.link else img
    if urlparse(hit.url).scheme in ("http", "https"):
        return f'<img src="{attr(hit.url)}" alt="{alt}" width="{width}"/>'
    name = hit.url.rstrip("/").rsplit("/", 1)[-1]
    return f'<span title="{attr(hit.url)}">{md_text(name, NAME_CHARS)}</span>' if name else ""


def hits_markdown(hits: list[Hit], thumbs: dict[str, Thumb] | None = None) -> list[str]:
    """A markdown table: rank, thumbnail, prompt, and distance, id and site in one column."""
    if not hits:
        return ["_no hits_"]
    thumbs = thumbs or {}
    out = ["| # | image | prompt | distance, id, site |", "|---|---|---|---|"]
    for rank, h in enumerate(hits, 1):
        site = md_text(h.source_site or h.origin, SITE_CHARS)
        match = f"{max(h.distance, 0.0):.4f}<br>{short_id(h.id)}<br>{site}"
        made = " ".join(x for x in (h.tool, h.model_name) if x)
        if made:  # how the image was made, when the source says
            match += f"<br>{md_text(made, SITE_CHARS)}"
        picture = thumbnail(h, thumbs.get(h.id))
        out.append(f"| {rank} | {picture} | {wrap_cell(h.prompt)} | {match} |")
    return out


def hits_rows(hits: list[Hit]) -> list[dict]:
    """Table-artifact rows for ``hits``, cut to fit the panel."""
    return [
        {
            "rank": rank,
            "distance": round(max(h.distance, 0.0), 4),
            "id": cut(h.id, ID_CHARS),
            "prompt": cut(h.prompt, PROMPT_CHARS),
            "site": cut(h.source_site or h.origin, SITE_CHARS),
            "model": cut(h.model_name, SITE_CHARS),
            "size": f"{h.width}x{h.height}",
        }
        for rank, h in enumerate(hits, 1)
    ]


def publish(key: str, title: str, markdown: list[str], rows: list[dict], what: str) -> None:
    """One markdown artifact (``key``) and one table artifact (``key``-table)."""
    create_markdown_artifact("\n".join([f"# {title}", "", *markdown]), key=key, description=what)
    create_table_artifact(rows, key=f"{key}-table", description=what)
