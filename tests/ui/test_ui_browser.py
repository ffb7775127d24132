"""The search page in a real browser: Debian's Chromium, headless, driven by Playwright.

``PROMPTLAKE_SCREENSHOT=docs/search-page.png`` saves the README's screenshot from this run.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

from promptlake.flows.params import RefineParams, SearchParams
from promptlake.flows.refine import refine_flow
from promptlake.flows.search import search_flow
from promptlake.storage.datadir.layout import DataDir
from promptlake.storage.store.hits import StoreBusy
from promptlake.tasks.metadata import read_metadata
from promptlake.tasks.plan import read_shard
from tests.conftest import artifacts_of
from tests.helpers.prefect_ui import api_of
from tests.helpers.ui_server import (
    FEEDBACK_IDEA,
    PageServer,
    build_store,
    page_service,
)

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ALL_LOADED = """(sel) => { const imgs = [...document.querySelectorAll(sel)];
  return imgs.length > 0 && imgs.every((i) => i.complete && i.naturalWidth > 0); }"""
IMAGE_STATES = """(sel) => [...document.querySelectorAll(sel)].map(
  (i) => [i.getAttribute("src"), i.complete, i.naturalWidth])"""

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="needs Chromium: apt-get install -y chromium"
)


@pytest.fixture(scope="module")
def store(tmp_path_factory, tiny_clip):
    return build_store(tmp_path_factory.mktemp("ui-browser"), tiny_clip)


@pytest.fixture(scope="module")
def browser_page(store):
    from playwright.sync_api import sync_playwright

    with PageServer(page_service(store)) as server, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1440, "height": 1000})
        page.set_default_timeout(60_000)  # a busy 2-core machine
        problems: list[str] = []
        page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
        page.on("console", lambda m: m.type == "error" and problems.append(m.text))
        page.on(
            "request",
            lambda r: (
                r.url.startswith((server.url, "blob:", "data:"))
                or problems.append(f"request outside the page: {r.url}")
            ),
        )
        page.goto(server.url)
        yield page, server, problems
        browser.close()


def loaded(page, selector: str) -> None:
    """Wait until every image under ``selector`` has loaded; say which did not."""
    from playwright.sync_api import TimeoutError as Timeout

    try:
        page.wait_for_function(ALL_LOADED, arg=selector)
    except Timeout:
        states = page.evaluate(IMAGE_STATES, selector)
        raise AssertionError(f"images not loaded: {selector}: {states}") from None


def search(page, text: str) -> None:
    page.fill("#text", text)
    page.press("#text", "Enter")


def test_search_shows_thumbnails_details_and_more_like_this(browser_page, store):
    page, _, problems = browser_page
    prompt = read_shard(DataDir(store.data_dir), "00000")["prompt"][5].as_py()
    search(page, prompt)
    page.wait_for_function("() => document.querySelectorAll('#grid .card').length === 24")
    loaded(page, "#grid .card:nth-child(-n+6) img[src]")  # feedback rows: no image
    assert page.inner_text("#grid .card:first-child .prompt") == prompt
    assert page.inner_text("#grid .card:first-child .sim") == "1.000"
    assert page.inner_text("#status").startswith("24 prompts in ")

    page.click("#grid .card:first-child .open")
    page.wait_for_selector("#detail[open]")
    assert page.inner_text("#detail-prompt") == prompt
    assert "p0005" in page.inner_text("#detail-meta")
    loaded(page, "#detail-img")
    page.click("#more-like")
    page.wait_for_function("() => document.querySelector('#status').textContent.includes('like')")
    assert not page.is_visible("#detail")
    assert page.inner_text("#status").startswith("24 images like p0005")
    assert page.get_attribute("#grid .card:first-child img", "src").startswith("/img/p0005?v=")
    assert not problems, problems


def test_feedback_rows_show_their_lineage(browser_page):
    page, _, problems = browser_page
    page.select_option("#target", "prompts")  # "more like this" left it at images
    page.select_option("select[name=origin]", "feedback")  # offered: the prompts table has it
    search(page, FEEDBACK_IDEA)
    page.wait_for_function("() => document.querySelectorAll('#grid .card').length === 2")
    page.click("#grid .card:first-child .open")
    page.wait_for_selector("#lineage:not([hidden])")
    assert f"idea: {FEEDBACK_IDEA}" in page.inner_text("#lineage-meta")
    loaded(page, "#parents img")  # the rows it drew from
    assert page.locator("#parents li").count() >= 1
    assert page.is_disabled("#more-like")  # no image was generated for it
    page.keyboard.press("Escape")
    page.select_option("select[name=origin]", "")
    assert not problems, problems


def test_a_busy_store_is_said_not_waited_for(browser_page, monkeypatch):
    page, _, problems = browser_page
    holder = "held by pid 4242 (promptlake ingest) since 12:00:01"

    def held(*args, **kwargs):
        raise StoreBusy(holder)

    monkeypatch.setattr("promptlake.ui.service.search", held)
    search(page, "a cat")
    page.wait_for_selector("#status.warn")
    assert page.inner_text("#status") == f"the store is busy: {holder}"
    assert not [p for p in problems if "503" not in p], problems
    problems.clear()  # the browser logs the 503 itself


def test_refine_then_drop_an_a1111_png(browser_page, store):
    page, _, problems = browser_page
    page.fill("#idea", "a cat on a sofa")
    page.fill("#refine-form input[name=n]", "3")
    page.click("#refine-form button")
    page.wait_for_function("() => document.querySelectorAll('#variants > li').length === 3")
    variants = page.locator("#variants .prompt-full").all_inner_texts()
    assert all(v.startswith("a cat on a sofa, ") for v in variants)
    assert "by offline" in page.inner_text("#refine-status")
    page.click("#variants > li:first-child summary")
    loaded(page, "#variants > li:first-child .mini img[src]")

    png = store.data_dir.parent / "source" / "images" / "p0003.png"
    drop_file(page, "#drop", png.read_bytes(), "p0003.png")
    page.wait_for_selector("#exact:not([hidden])")
    meta = read_metadata(png.read_bytes())
    assert page.inner_text("#exact-prompt") == meta.prompt
    assert "a1111" in page.inner_text("#exact-tool")
    extra = page.inner_text("#exact-extra")
    assert "blurry, lowres" in extra and "Seed: 3" in extra
    keys = page.locator("#exact-extra dt").all_inner_texts()
    assert keys == ["negative prompt", "settings"], keys  # seed, steps: said in the settings line
    loaded(page, "#preview-img")
    loaded(page, "#grid .card:nth-child(-n+6) img[src]")  # feedback rows: no image
    assert not problems, problems
    shot = page.screenshot()
    if os.environ.get("PROMPTLAKE_SCREENSHOT"):
        Path(os.environ["PROMPTLAKE_SCREENSHOT"]).write_bytes(shot)

    # words typed now search with the image: the page says so, and one click drops the image
    assert "together with any text above" in page.inner_text("#preview figcaption")
    search(page, "a castle")
    page.wait_for_function("() => new URL(location).searchParams.get('text') === 'a castle'")
    assert page.is_visible("#exact") and page.is_visible("#preview")
    page.click("#without-image")
    page.wait_for_selector("#exact", state="hidden")
    assert page.is_hidden("#preview") and page.is_visible("#drop-hint")
    page.wait_for_function("() => !new URL(location).searchParams.has('image')")
    assert page.evaluate("() => new URL(location).searchParams.get('text')") == "a castle"
    assert not problems, problems


def drop_file(page, selector: str, data: bytes, name: str) -> None:
    """Drop ``data`` as a file on ``selector``, the way a browser delivers a dragged file."""
    page.evaluate(
        """([sel, b64, name]) => {
          const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
          const dt = new DataTransfer();
          dt.items.add(new File([bytes], name, { type: "image/png" }));
          const target = document.querySelector(sel);
          for (const type of ["dragover", "drop"]) {
            target.dispatchEvent(new DragEvent(type, { dataTransfer: dt, bubbles: true,
                                                       cancelable: true }));
          }
        }""",
        [selector, base64.b64encode(data).decode(), name],
    )


def test_prefect_ui_artifacts_fit_and_show_their_thumbnails(browser_page, prefect_ui, store):
    """The search and refine flows' artifacts, opened in the Prefect UI itself: every thumbnail
    (inline, from the image cache) loads, and the tables fit the artifact panel."""
    page, _, _ = browser_page
    where = {"data_dir": str(store.data_dir), "clip_model": store.clip_model, "origin": "dataset"}
    with api_of(f"{prefect_ui}/api"):
        runs = [
            search_flow(
                **SearchParams(text="a cat", k=8, **where).flow_kwargs(), return_state=True
            ),
            refine_flow(
                **RefineParams(idea="a cat", n=3, k=8, llm="offline", **where).flow_kwargs(),
                return_state=True,
            ),
        ]
        arts = [
            a
            for run in runs
            for a in artifacts_of(run.state_details.flow_run_id)
            if a.key in ("search-results", "refine-results")
        ]
    assert len(arts) == 2
    for art in arts:
        page.goto(f"{prefect_ui}/artifacts/artifact/{art.id}")
        page.locator("table").last.wait_for()
        loaded(page, "table img")
        assert page.locator("table img").count() == 8
        for table in page.locator("table").all():
            width, room = table.evaluate("(t) => [t.scrollWidth, t.parentElement.clientWidth]")
            assert width <= room, f"{art.key}: a {width} px table in a {room} px panel"
