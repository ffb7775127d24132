"""The Prefect UI's result artifacts: thumbnails from the LMDB cache (inline, or linked to the
search page), every value escaped, text cut to fit the artifact panel."""

from __future__ import annotations

import base64
import html
import io
import json
from html.parser import HTMLParser

import pytest
from PIL import Image

from promptlake.flows.params import SearchParams
from promptlake.flows.results import hits_markdown, hits_rows
from promptlake.flows.search import search_flow
from promptlake.settings import Settings
from promptlake.storage.datadir.image_cache import ImageCache
from promptlake.storage.datadir.layout import DataDir
from promptlake.storage.datadir.records import FetchRecord
from promptlake.storage.store import Hit
from promptlake.tasks.images.thumbnails import thumbnails
from tests.conftest import artifacts_of
from tests.helpers.fault_server import make_image

NASTY = 'http://x/a.png?q="><script>alert(1)</script>|b'


class Tags(HTMLParser):
    """The tags of a markdown cell, with their attributes, as a browser reads them."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def tags_of(text: str) -> list[tuple[str, dict]]:
    parser = Tags()
    parser.feed(text)
    return parser.tags


def cells(line: str) -> list[str]:
    """A markdown table row's cells (``\\|`` is a pipe inside a cell)."""
    return [c.strip() for c in line.replace("\\|", "\0").strip("|").split("|")]


def test_values_are_escaped_and_cut_to_fit():
    long_id = "0f8e4c2a-1b7d-4e9a-9c3f-5d6b7a8e9f01"
    hit = Hit(long_id, "a <b>cat</b> | " + "very " * 60, NASTY, 0.1, source_site="x" * 40)
    header, _, row = hits_markdown([hit])
    parts = cells(row)
    assert len(parts) == len(cells(header)) == 4
    (tag, attrs), *_ = tags_of(parts[1])
    assert tag == "img" and attrs["src"] == NASTY  # the quote did not end the attribute
    assert "<script>" not in row and "<b>" not in row
    prompt = parts[2].split("<br>")  # the panel's cells never wrap: lines of their own
    shown = [html.unescape(line.replace("\0", "|")) for line in prompt]
    assert len(shown) == 3 and all(len(line) <= 56 for line in shown)
    assert shown[0].startswith("a <b>cat</b> | very") and shown[-1].endswith("…")
    distance, code, site = parts[3].split("<br>")
    assert distance == "0.1000" and site == "x" * 15 + "…"
    (tag, attrs), *_ = tags_of(code)
    assert (tag, attrs["title"]) == ("code", long_id) and ">0f8e4c2a-…<" in code
    (table,) = hits_rows([hit])
    assert table["id"] == "0f8e4c2a-…" and table["prompt"].endswith("…")
    assert all(len(str(v)) <= 56 for v in table.values())


def test_local_paths_that_never_reached_the_cache_show_as_text():
    (_, _, row) = hits_markdown([Hit("r1", "p", "file:///data/a b.png", 0.2)])
    assert "<img" not in row and '<span title="file:///data/a b.png">a b.png</span>' in row


@pytest.fixture
def cached(tmp_path) -> Settings:
    settings = Settings(data_dir=tmp_path / "data")
    cache = ImageCache.open(DataDir(settings.data_dir).image_cache)
    cache.put(FetchRecord(id="r1", url="http://x/1", status="ok"), make_image("r1"))
    cache.put(FetchRecord(id="r 2/x", url="http://x/2", status="ok"), make_image("r2"))
    return settings


def test_inline_thumbnails_are_small_jpegs_from_the_cache(cached):
    hits = [("r1", "http://x/1"), ("r 2/x", "http://x/2"), ("missing", "http://x/3")]
    assert thumbnails([("r1", "http://x/old")], cached) == {}  # another version of the row
    thumbs = thumbnails(hits, cached)
    assert set(thumbs) == {"r1", "r 2/x"}
    head, data = thumbs["r1"].src.split(",", 1)
    assert head == "data:image/jpeg;base64" and thumbs["r1"].link is None
    jpeg = base64.b64decode(data)
    assert max(Image.open(io.BytesIO(jpeg)).size) == 96 and len(jpeg) < 6000
    _, _, row = hits_markdown([Hit("r1", "p", NASTY, 0.1)], thumbs)
    (tag, attrs), *_ = tags_of(cells(row)[1])
    assert tag == "img" and attrs["src"] == thumbs["r1"].src


def test_thumbnails_link_to_the_search_page_when_it_runs(cached):
    ui = cached.model_copy(update={"ui_url": "http://pl.example:8700/"})
    thumbs = thumbnails([("r1", "http://x/1"), ("r 2/x", "http://x/2")], ui)
    assert thumbs["r 2/x"].src.startswith("http://pl.example:8700/img/r%202%2Fx?v=")
    assert thumbs["r1"].link == "http://pl.example:8700/?like=r1&target=images"
    _, _, row = hits_markdown([Hit("r1", "p", "", 0.1)], thumbs)
    (a, a_attrs), (img, img_attrs) = tags_of(cells(row)[1])
    assert (a, a_attrs["href"]) == ("a", thumbs["r1"].link)
    assert (img, img_attrs["src"]) == ("img", thumbs["r1"].src)
    assert thumbs["r1"].src.startswith("http://pl.example:8700/img/r1?v=")


def test_no_cache_yet_means_no_thumbnails_and_no_cache_made(tmp_path):
    settings = Settings(data_dir=tmp_path / "empty")
    assert thumbnails([("r1", "http://x/1")], settings) == {}
    assert not (tmp_path / "empty").exists()


@pytest.mark.usefixtures("prefect_server")
def test_search_flow_artifact_carries_cached_thumbnails(built, monkeypatch):
    s, _ = built
    monkeypatch.setenv("PROMPTLAKE_PRECISION", "fp32")
    params = SearchParams(text="a cat", k=30, data_dir=str(s.data_dir), clip_model=s.clip_model)
    state = search_flow(**params.flow_kwargs(), return_state=True)
    arts = {a.key: a for a in artifacts_of(state.state_details.flow_run_id)}
    md = arts["search-results"].data
    assert len(state.result()) == 30  # the whole store: every fifth image was a 404
    assert md.count("data:image/jpeg;base64,") == 24
    assert md.count('<img src="http://127.0.0.1') == 6  # never cached: their own URLs
    assert len(md) < 30 * 6000  # small artifacts

    monkeypatch.setenv("PROMPTLAKE_UI_URL", "http://127.0.0.1:8700")
    state = search_flow(**params.flow_kwargs(), return_state=True)
    md = {a.key: a for a in artifacts_of(state.state_details.flow_run_id)}["search-results"].data
    assert md.count('<a href="http://127.0.0.1:8700/?like=') == 24
    table = {a.key: a for a in artifacts_of(state.state_details.flow_run_id)}
    rows = table["search-results-table"].data
    rows = json.loads(rows) if isinstance(rows, str) else rows
    assert [r["rank"] for r in rows] == list(range(1, 31))
