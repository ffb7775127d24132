"""Artifacts that show search and refine results in the Prefect UI: markdown with thumbnails
and a table, so a person can use the UI alone."""

from __future__ import annotations

from urllib.parse import urlparse

from prefect.artifacts import create_markdown_artifact, create_table_artifact

from promptlake.storage.store import Hit


def md_text(text: str) -> str:
    """Text safe inside a markdown table cell or line."""
    return " ".join(text.replace("|", "\\|").replace("<", "&lt;").split())


def thumbnail(url: str, alt: str, width: int = 128) -> str:
    """An inline image for web URLs (what a browser can show); a local path as text."""
    if urlparse(url).scheme in ("http", "https"):
        return f'<img src="{url}" alt="{md_text(alt)}" width="{width}"/>'
    return f"`{md_text(url)}`" if url else ""


def hits_markdown(hits: list[Hit]) -> list[str]:
    """A markdown table: rank, thumbnail, distance, prompt, id and site."""
    if not hits:
        return ["_no hits_"]
    lines = ["| # | image | distance | prompt | id | site |", "|---|---|---|---|---|---|"]
    for rank, h in enumerate(hits, 1):
        lines.append(
            f"| {rank} | {thumbnail(h.url, h.id)} | {max(h.distance, 0.0):.4f} | "
            f"{md_text(h.prompt[:300])} | `{h.id}` | {md_text(h.source_site or h.origin)} |"
        )
    return lines


def hits_rows(hits: list[Hit]) -> list[dict]:
    """Table-artifact rows for ``hits``."""
    return [
        {
            "rank": rank,
            "distance": round(max(h.distance, 0.0), 5),
            "id": h.id,
            "prompt": h.prompt,
            "url": h.url,
            "source_site": h.source_site,
            "size": f"{h.width}x{h.height}",
            "origin": h.origin,
        }
        for rank, h in enumerate(hits, 1)
    ]


def publish(key: str, title: str, markdown: list[str], rows: list[dict], what: str) -> None:
    """One markdown artifact (``key``) and one table artifact (``key``-table)."""
    create_markdown_artifact("\n".join([f"# {title}", "", *markdown]), key=key, description=what)
    create_table_artifact(rows, key=f"{key}-table", description=what)
