"""The search page as a newcomer browses it, in a real browser (Debian's Chromium, headless,
driven by Playwright): past the first page, Back and Forward, arrow keys in the detail, the
file chooser from the keyboard, a visible focus, filters offered from the store, a zero-hit
message that names the filters, the detail's image and original, a narrow screen.

Screenshots go to the test's tmp dir and, when ``PROMPTLAKE_SCREENSHOT_DIR`` is set, there.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pytest
import requests

from promptlake.storage.datadir.layout import DataDir
from promptlake.tasks.metadata import read_metadata
from promptlake.tasks.plan import read_shard
from tests.helpers.ui_server import FEEDBACK_IDEA, PageServer, build_store, page_service
from tests.ui.test_ui_browser import ARGS, CHROMIUM, drop_file, loaded

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="needs Chromium: apt-get install -y chromium"
)
CARDS = "() => document.querySelectorAll('#grid .card').length"
IDS = "() => [...document.querySelectorAll('#grid .card .open')].map((b) => b.dataset.id)"
RING = """() => { const s = getComputedStyle(document.activeElement);
  return [document.activeElement.id || document.activeElement.className, s.outlineStyle,
          parseFloat(s.outlineWidth)]; }"""


@pytest.fixture(scope="module")
def store(tmp_path_factory, tiny_clip):
    return build_store(tmp_path_factory.mktemp("ui-browse"), tiny_clip)


@pytest.fixture(scope="module")
def rows(store):
    data = DataDir(store.data_dir)
    return [r for s in ("00000", "00001") for r in read_shard(data, s).to_pylist()]


@pytest.fixture(scope="module")
def browser(store):
    from playwright.sync_api import sync_playwright

    with PageServer(page_service(store)) as server, sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield chromium, server
        chromium.close()


class Tab:
    """One browser page on the search page: what it asked the API, and what went wrong."""

    def __init__(self, browser, server, width: int = 1440, height: int = 1000) -> None:
        self.page = browser.new_page(viewport={"width": width, "height": height})
        self.page.set_default_timeout(60_000)  # a busy 2-core machine
        self.server, self.problems, self.searches, self.choosers = server, [], [], []
        # a listener for the whole test keeps Playwright intercepting file choosers: one made
        # per expect_file_chooser() is switched on lazily and can miss a quick keypress
        self.page.on("filechooser", lambda chooser: self.choosers.append(chooser))
        self.page.on("pageerror", lambda exc: self.problems.append(f"page error: {exc}"))
        self.page.on("console", lambda m: m.type == "error" and self.problems.append(m.text))
        self.page.on("request", self._request)
        self.page.goto(server.url)

    def _request(self, r) -> None:
        if not r.url.startswith((self.server.url, "blob:", "data:")):
            self.problems.append(f"request outside the page: {r.url}")
        if "/api/search" in r.url:
            self.searches.append(r.url)

    def search(self, text: str, cards: int) -> None:
        self.page.fill("#text", text)
        self.page.press("#text", "Enter")
        self.cards(cards)

    def cards(self, n: int) -> None:
        self.page.wait_for_function(
            f"() => ({CARDS})() === {n} && !document.querySelector"
            "('#status').textContent.endsWith('…')"
        )

    def chooser_from(self, key: str):
        """Press ``key`` on the focused element: the file chooser it opened."""
        before = len(self.choosers)
        self.page.keyboard.press(key)
        for _ in range(600):
            if len(self.choosers) > before:
                return self.choosers[-1]
            self.page.wait_for_timeout(100)
        raise AssertionError(f"{key} opened no file chooser")

    def prompts(self) -> list[str]:
        return self.page.locator("#grid .card .prompt").all_inner_texts()

    def shot(self, tmp_path: Path, name: str, *, whole: bool = False) -> None:
        png = self.page.screenshot(full_page=whole)
        (tmp_path / name).write_bytes(png)
        if os.environ.get("PROMPTLAKE_SCREENSHOT_DIR"):
            Path(os.environ["PROMPTLAKE_SCREENSHOT_DIR"], name).write_bytes(png)

    def close(self) -> None:
        self.page.close()
        assert not self.problems, self.problems


@pytest.fixture
def tab(browser):
    made = Tab(*browser)
    yield made
    made.close()


def api_ids(server, **params) -> list[str]:
    got = requests.get(server.url + "/api/search", params=params, timeout=120)
    assert got.status_code == 200, got.text
    return [h["id"] for h in got.json()["hits"]]


def test_past_the_first_page_then_back_and_forward(tab, tmp_path):
    """Type, go past the first page until there is no more, search again, Back to the first
    search (from memory: no request) and Forward again."""
    page = tab.page
    page.fill("input[name=k]", "10")
    tab.search("a cat sleeping on a sofa", 10)
    first = tab.prompts()
    assert page.inner_text("#status").startswith("10 prompts in ")
    for shown in (20, 30, 40, 42):  # 40 dataset rows and 2 feedback rows
        page.click("#more")
        tab.cards(shown)
        assert tab.prompts()[:10] == first  # appended, never reshuffled
    assert page.inner_text("#status").endswith("5 pages (all)"), page.inner_text("#status")
    assert page.is_hidden("#more")
    assert "pages=5" in page.url and "k=10" in page.url
    assert len(set(page.evaluate(IDS))) == 42
    expected = api_ids(tab.server, text="a cat sleeping on a sofa", k=42)
    assert page.evaluate(IDS) == expected
    tab.shot(tmp_path, "more.png", whole=True)

    tab.search("a castle on a hill", 10)
    castle = tab.prompts()
    asked = len(tab.searches)
    page.go_back()
    tab.cards(42)
    assert page.input_value("#text") == "a cat sleeping on a sofa"
    assert page.evaluate(IDS) == expected and "pages=5" in page.url
    page.go_forward()
    tab.cards(10)
    assert page.input_value("#text") == "a castle on a hill" and tab.prompts() == castle
    assert len(tab.searches) == asked  # both from memory
    page.go_back()
    page.go_back()  # before the first search: the empty page
    page.wait_for_function("() => !document.querySelector('#grid .card')")
    assert page.input_value("#text") == ""


def test_arrow_keys_step_through_hits_and_focus_returns(tab, tmp_path):
    page = tab.page
    page.fill("input[name=k]", "5")
    tab.search("a lighthouse on a cliff", 5)
    prompts = tab.prompts()
    page.click("#grid .card:nth-child(1) .open")
    page.wait_for_selector("#detail[open]")
    page.keyboard.press("ArrowRight")
    assert page.inner_text("#detail-prompt") == prompts[1]
    page.keyboard.press("ArrowRight")
    assert page.inner_text("#detail-prompt") == prompts[2]
    assert page.inner_text("#detail-pos") == "3 of 5+"
    page.keyboard.press("ArrowLeft")
    assert page.inner_text("#detail-prompt") == prompts[1]
    page.keyboard.press("End")
    page.keyboard.press("ArrowRight")  # past the last loaded hit: the next page loads
    tab.cards(10)
    assert page.inner_text("#detail-prompt") == tab.prompts()[5]
    # the sixth hit may be a feedback row, which has no image (the index's order among near
    # ties differs from build to build): then the detail says why instead
    if page.is_hidden("#detail-noimg"):
        loaded(page, "#detail-img")
    else:
        assert page.inner_text("#detail-noimg").strip()
    tab.shot(tmp_path, "detail.png")
    page.keyboard.press("Escape")  # focus goes back to the hit last shown
    page.wait_for_function(
        "() => document.activeElement.getAttribute('aria-label') === 'hit 6: details'"
    )


def test_the_file_chooser_opens_from_the_keyboard_and_focus_shows(tab, store, tmp_path):
    page = tab.page
    png = store.data_dir.parent / "source" / "images" / "p0003.png"
    page.focus("#text")
    rings = []
    for _ in range(8):  # text, target, Search, the drop zone, "choose a file"
        page.keyboard.press("Tab")
        rings.append(page.evaluate(RING))
        if rings[-1][0] == "choose":
            break
    assert [r[0] for r in rings][-2:] == ["drop", "choose"], rings
    assert all(style == "solid" and width >= 3 for _, style, width in rings), rings
    tab.chooser_from("Enter").set_files(str(png))
    page.wait_for_selector("#exact:not([hidden])")
    assert page.inner_text("#exact-prompt") == read_metadata(png.read_bytes()).prompt
    assert page.input_value("#idea") == read_metadata(png.read_bytes()).prompt  # it follows
    page.click("#clear-image")
    page.focus("#drop")
    tab.chooser_from(" ").set_files([])  # the drop zone itself opens it too
    page.focus("#grid .card:nth-child(2) .open")
    page.keyboard.press("Shift+Tab")
    page.keyboard.press("Tab")  # focus by keyboard: the ring shows
    assert page.evaluate(RING)[1:] == ["solid", 3]
    tab.shot(tmp_path, "focus.png")


def test_target_and_idea_follow_the_current_search(tab, store):
    page = tab.page
    png = store.data_dir.parent / "source" / "images" / "p0007.png"
    tab.search("a castle on a hill", 24)
    assert page.input_value("#idea") == "a castle on a hill"
    # a feedback row may rank first: it has no image, so no "more like this"
    page.locator("#grid .card:has(img[src]) .open").first.click()
    page.click("#more-like")
    page.wait_for_function("() => document.querySelector('#status').textContent.includes('like')")
    assert page.input_value("#target") == "images"
    drop_file(page, "#drop", png.read_bytes(), "p0007.png")  # a new image: its prompts again
    page.wait_for_function(
        "() => document.querySelector('#status').textContent.startsWith('24 prompts')"
    )
    assert page.input_value("#target") == "prompts"
    page.select_option("#target", "images")  # chosen by the person: it stays
    drop_file(page, "#drop", png.read_bytes(), "p0007.png")
    page.wait_for_function(
        "() => document.querySelector('#status').textContent.startsWith('24 images')"
    )


def test_filters_come_from_the_store_and_zero_hits_name_them(tab, rows, tmp_path):
    page = tab.page
    sites = Counter(r["source_site"] for r in rows) + Counter({"feedback": 2})
    page.wait_for_function(
        f"() => document.querySelectorAll('[name=source_site] option').length === {len(sites) + 1}"
    )
    labels = page.locator("select[name=source_site] option").all_inner_texts()
    assert sorted(labels[1:]) == sorted(f"{s} ({n})" for s, n in sites.items())
    site = sites.most_common(1)[0][0]
    page.select_option("select[name=source_site]", site)
    tab.search("a cat", sites[site])
    assert set(page.locator("#grid .card .site").all_inner_texts()) == {site}
    assert page.inner_text("#filters-count") == "(1 in force)"
    page.fill("input[name=min_width]", "513")
    tab.search("a cat", 0)
    said = page.inner_text("#zero-text")
    assert said == (
        f"No prompts match source site {site} and min width 513 (the widest image here is 256 px)."
    )
    tab.shot(tmp_path, "zero.png")
    page.click("#unfilter")
    tab.cards(24)
    assert page.input_value("input[name=min_width]") == ""
    assert page.is_hidden("#zero")
    page.goto(tab.server.url + "/?text=a+cat&tool=a1111&model_name=xl&source_site=nowhere")
    page.wait_for_selector("#zero:not([hidden])")
    assert page.input_value("select[name=tool]") == "a1111"
    assert page.input_value("input[name=model_name]") == "xl"
    assert "source site nowhere (no row here has this source site)" in page.inner_text("#zero")


def test_detail_shows_the_cached_copy_its_original_and_why_none(tab, rows, tmp_path):
    page = tab.page
    row = rows[5]
    tab.search(row["prompt"], 24)
    page.click("#grid .card:first-child .open")
    loaded(page, "#detail-img")
    natural, shown, attr = page.evaluate(
        "() => { const i = document.querySelector('#detail-img');"
        " return [i.naturalWidth, i.getBoundingClientRect().width, i.width]; }"
    )
    assert natural == attr == 256 and shown <= natural  # never stretched
    page.wait_for_function("() => document.querySelector('#detail-caption').textContent")
    assert page.inner_text("#detail-caption") == "cached copy 256×256 of the original 256×256"
    assert page.get_attribute("#detail-orig", "href").startswith(f"/img/{row['id']}?v=")
    assert page.inner_text("#detail-orig").endswith(f"/images/{row['id']}.png")
    page.keyboard.press("Escape")
    page.select_option("select[name=origin]", "feedback")
    tab.search(FEEDBACK_IDEA, 2)
    page.click("#grid .card:first-child .open")
    page.wait_for_selector("#detail-body.no-image")
    assert "no image was generated" in page.inner_text("#detail-noimg")
    assert page.is_hidden("#detail-fig") and page.is_hidden("#detail-orig-row")
    tab.shot(tmp_path, "detail-no-image.png")


def test_refine_says_how_many_of_those_asked_and_why(tab, tmp_path):
    page = tab.page
    idea = " ".join(["a very long idea about a cat"] * 15)  # fills CLIP's window alone
    page.fill("#idea", idea)
    page.fill("#refine-form input[name=n]", "3")
    page.click("#refine-form button")
    page.wait_for_function("() => document.querySelectorAll('#variants > li').length === 1")
    said = page.inner_text("#refine-status")
    assert said.startswith("1 of 3 variants by offline") and "fills CLIP's" in said, said
    tab.shot(tmp_path, "refine-short.png")


def test_a_narrow_screen_keeps_everything_in_view(browser, tmp_path):
    tab = Tab(*browser, width=420, height=800)
    page = tab.page
    tab.search("a cat", 24)
    width, right = page.evaluate(
        "() => [document.documentElement.scrollWidth,"
        " document.querySelector('#search button').getBoundingClientRect().right]"
    )
    assert width <= 420 and right <= 420, (width, right)
    top = page.evaluate("() => document.querySelector('#grid .card').getBoundingClientRect().top")
    assert top < 800, top  # the first hit on the first screen
    tab.shot(tmp_path, "narrow-420.png")
    page.click("#grid .card:first-child .open")
    columns = page.evaluate(
        "() => getComputedStyle(document.querySelector('.detail-body')).gridTemplateColumns"
    )
    assert len(columns.split()) == 1, columns
    tab.shot(tmp_path, "narrow-420-detail.png")
    tab.close()
