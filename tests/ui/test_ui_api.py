"""The search page's API over real HTTP: uvicorn on a loopback port, a store built by the real
stages with the tiny CLIP, the real LMDB cache; and ``promptlake ui`` as a real process."""

from __future__ import annotations

import http.client
import os
import signal
import subprocess
import sys
from urllib.parse import urlparse

import pytest
import requests

from promptlake.cli import main
from promptlake.settings import store_url
from promptlake.storage.store import open_store
from promptlake.storage.store.hits import StoreBusy
from promptlake.tasks.plan import read_shard
from promptlake.ui.service import PageService
from tests.helpers.fault_server import bomb_png
from tests.helpers.ui_server import (
    FEEDBACK_IDEA,
    PageServer,
    build_store,
    free_port,
    page_service,
    wait_for,
)

HIT_KEYS = {"id", "prompt", "url", "distance", "width", "height", "source_site", "origin"}
META_KEYS = {"negative_prompt", "model_name", "tool", "settings", "extra"}


@pytest.fixture(scope="module")
def store(tmp_path_factory, tiny_clip):
    return build_store(tmp_path_factory.mktemp("ui"), tiny_clip)


@pytest.fixture(scope="module")
def page(store):
    with PageServer(page_service(store)) as server:
        yield server


@pytest.fixture(scope="module")
def rows(store):
    from promptlake.storage.datadir.layout import DataDir

    shards = [read_shard(DataDir(store.data_dir), s).to_pylist() for s in ("00000", "00001")]
    return {r["id"]: r for rows in shards for r in rows}


def get(page, path, **params):
    return requests.get(page.url + path, params=params, timeout=120)


def test_healthz_says_ready_once_warm(page, store):
    body = get(page, "/healthz").json()
    assert body["ok"] and body["ready"] and body["model"] == store.clip_model


def test_text_search_hits_carry_cached_thumbnails(page, rows):
    row = rows["p0005"]
    got = get(page, "/api/search", text=row["prompt"], k=5)
    assert got.status_code == 200
    body = got.json()
    assert len(body["hits"]) == 5 and body["took_ms"] > 0 and body["exact"] is None
    top = body["hits"][0]
    assert HIT_KEYS | META_KEYS | {"thumbnail", "image"} == set(top)
    assert top["id"] == "p0005" and top["distance"] < 1e-4 and top["prompt"] == row["prompt"]
    assert top["source_site"] == row["source_site"]
    assert top["thumbnail"].startswith("/img/p0005?v=")  # the version: a changed image, a new link
    img = get(page, top["thumbnail"])
    assert img.status_code == 200 and img.headers["content-type"] == "image/jpeg"
    assert "immutable" in img.headers["cache-control"] and img.content[:2] == b"\xff\xd8"
    bare = get(page, "/img/p0005")  # an address without the version: the browser asks again
    assert bare.content == img.content and bare.headers["cache-control"] == "no-cache"
    again = requests.get(
        page.url + top["thumbnail"], headers={"If-None-Match": img.headers["etag"]}, timeout=60
    )
    assert again.status_code == 304 and not again.content


def test_filters_and_feedback_lineage(page, rows):
    site = rows["p0005"]["source_site"]
    hits = get(page, "/api/search", text="a castle", k=40, source_site=site).json()["hits"]
    assert hits and {h["source_site"] for h in hits} == {site}
    assert get(page, "/api/search", text="a castle", min_width=513).json()["hits"] == []
    fed = get(page, "/api/search", text=FEEDBACK_IDEA, origin="feedback", k=5).json()["hits"]
    assert len(fed) == 2 and all(h["origin"] == "feedback" for h in fed)
    lineage = fed[0]["extra"]
    assert lineage["trigger"] == f"idea: {FEEDBACK_IDEA}" and lineage["created_at"]
    assert set(lineage["parent_ids"]) <= set(rows) | {h["id"] for h in fed}
    assert fed[0]["thumbnail"] is None  # no generator here: feedback rows have no image


def test_uploaded_image_with_metadata_answers_its_exact_prompt(page, store, rows):
    png = (store.data_dir.parent / "source" / "images" / "p0003.png").read_bytes()
    files = {"image": ("mine.png", png, "image/png")}
    got = requests.post(page.url + "/api/search", files=files, data={"k": "3"}, timeout=120)
    assert got.status_code == 200, got.text
    body = got.json()
    assert body["exact"]["prompt"] == rows["p0003"]["prompt"]
    assert body["exact"]["negative_prompt"] == "blurry, lowres"
    assert body["exact"]["settings"] == {"Steps": "20", "Seed": "3"}
    assert body["exact"]["tool"] == "a1111" and len(body["hits"]) == 3
    data = {"target": "images", "k": "2"}
    same = requests.post(page.url + "/api/search", files=files, data=data, timeout=120).json()
    assert same["hits"][0]["id"] == "p0003" and same["hits"][0]["distance"] < 0.01
    data["text"] = "a giant tree house"  # both: their vectors averaged
    assert len(post(page, files=files, data=data).json()["hits"]) == 2


def test_like_searches_with_the_rows_cached_image(page):
    same = get(page, "/api/search", like="p0007", target="images", k=3).json()["hits"]
    assert same[0]["id"] == "p0007" and same[0]["distance"] < 0.01
    prompts = get(page, "/api/search", like="p0007", target="prompts", k=4).json()
    assert len(prompts["hits"]) == 4 and prompts["exact"] is None


def test_refine_names_what_each_variant_drew_from(page):
    body = get(page, "/api/refine", idea="a cat on a sofa", n=2, k=6).json()
    assert body["refiner"] == "offline" and len(body["sources"]) == 6
    ids = {h["id"] for h in body["sources"]}
    assert len(body["variants"]) == 2
    for v in body["variants"]:
        assert v["prompt"].startswith("a cat on a sofa") and v["tokens"] > 0
        assert v["drawn_from"] and set(v["drawn_from"]) <= ids


def raw_get(page, path: str) -> tuple[int, dict]:
    """A request line sent as written: clients would resolve ``..`` before sending it."""
    parts = urlparse(page.url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    conn.request("GET", path)
    resp = conn.getresponse()
    return resp.status, {"type": resp.getheader("content-type"), "body": resp.read()}


@pytest.mark.parametrize(
    ("path", "status", "says"),
    [
        ("/img/../x", 404, "Not Found"),
        ("/img/..", 400, "not a row id"),
        ("/img/%2e%2e", 400, "not a row id"),
        ("/img/..%2f..%2fetc%2fpasswd", 404, "Not Found"),
        ("/img/a%00b", 400, "not a row id"),
        ("/img/no-such-row", 404, "has no cached image"),
        ("/api/search", 400, "give a text"),
        ("/api/search?text=x&k=0", 400, "k: Input should be greater than or equal to 1"),
        ("/api/search?text=x&k=ten", 400, "k: Input should be a valid integer"),
        ("/api/search?text=x&target=videos", 400, "target: Input should be 'prompts' or"),
        ("/api/search?text=x&min_width=-3", 400, "min_width: Input should be greater"),
        ("/api/search?text=x&minwidth=3", 400, "minwidth: unknown field"),
        ("/api/search?like=no-such-row", 404, "has no cached image"),
        ("/api/search?like=..", 400, "not a row id"),
        ("/api/refine", 400, "give an idea"),
        ("/api/refine?idea=x&n=99", 400, "n: Input should be less than or equal to 20"),
        ("/api/nothing", 404, "Not Found"),
    ],
)
def test_bad_requests_get_4xx_json(page, path, status, says):
    got, resp = raw_get(page, path)
    assert (got, resp["type"]) == (status, "application/json"), resp["body"][:300]
    assert says in resp["body"].decode() and b"Traceback" not in resp["body"]


def post(page, **kw):
    return requests.post(page.url + "/api/search", timeout=120, **kw)


def test_uploads_are_bounded_in_bytes_and_pixels(page, store):
    limit = store.ui_max_upload_bytes
    huge = b"\xff\xd8" + b"\0" * (limit + 1)
    got = post(page, files={"image": ("big.jpg", huge, "image/jpeg")})
    assert got.status_code == 413 and "PROMPTLAKE_UI_MAX_UPLOAD_BYTES" in got.json()["error"]

    def chunks():  # no Content-Length: counted as it arrives
        head = b'--zz\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n\r\n'
        yield head
        for _ in range(limit // 2**20 + 2):
            yield b"\0" * 2**20

    kind = {"content-type": "multipart/form-data; boundary=zz"}
    got = post(page, data=chunks(), headers=kind)
    assert got.status_code == 413 and "bytes" in got.json()["error"]
    for side in (7000, 30000):  # over the page's bound; over Pillow's own bomb guard too
        bomb = {"image": ("bomb.png", bomb_png(side, side), "image/png")}
        got = post(page, files=bomb)
        assert got.status_code == 413 and "UI_MAX_UPLOAD_PIXELS" in got.json()["error"]
    got = post(page, files={"image": ("notes.txt", b"hello", "text/plain")})
    assert got.status_code == 415 and "not an image" in got.json()["error"]
    got = post(page, data="{}", headers={"content-type": "application/json"})
    assert got.status_code == 415 and "multipart/form-data" in got.json()["error"]


def test_a_busy_store_answers_503_and_names_the_holder(page, monkeypatch):
    """The turn-taking that raises StoreBusy is built in storage/ (another branch); here the
    search it wraps raises the real exception type, and the page must answer 503, not hang."""
    holder = "the store is held by pid 4242 (promptlake ingest, load 00003) since 12:00:01"

    def held(*args, **kwargs):
        raise StoreBusy(holder)

    monkeypatch.setattr("promptlake.ui.service.search", held)
    got = get(page, "/api/search", text="a cat")
    assert got.status_code == 503 and got.json() == {"error": holder, "busy": True}


def test_promptlake_ui_command_serves_warm(store):
    """The real command in its own process: it loads CLIP before it answers, warns about a
    non-loopback address, and stops cleanly on Ctrl-C."""
    open_store(store_url(store)).close()  # the embedded store: one process at a time
    port = free_port()
    cli = [sys.executable, "-m", "promptlake.cli", "ui", "--data-dir", str(store.data_dir)]
    env = {**os.environ, "PROMPTLAKE_DEVICE": "cpu", "PROMPTLAKE_PRECISION": "fp32"}
    env.pop("PROMPTLAKE_CLIP_MODEL", None)  # the data dir's own model
    proc = subprocess.Popen(
        [*cli, "--host", "0.0.0.0", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        health = wait_for(base + "/healthz", proc).json()
        assert health["ready"] and health["model"] == store.clip_model
        hits = requests.get(base + "/api/search", params={"text": "a fox"}, timeout=60).json()
        assert len(hits["hits"]) == store.ui_k
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "warning: listening on 0.0.0.0" in err


def test_a_data_dir_without_embeddings_answers_503_until_it_has_some(tmp_path):
    with PageServer(PageService(str(tmp_path / "empty"))) as empty:
        assert get(empty, "/healthz").json()["ready"] is False
        got = get(empty, "/api/search", text="a cat")
        assert got.status_code == 503 and "has no embeddings yet" in got.json()["error"]


def test_a_model_that_will_not_load_is_a_cli_error(store, monkeypatch, capsys):
    """Before it serves anything: the command ends with one error line naming the model."""
    missing = str(store.data_dir / "no-such-model")
    monkeypatch.setenv("PROMPTLAKE_CLIP_MODEL", missing)
    assert main(["ui", "--data-dir", str(store.data_dir)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("promptlake: error: ") and missing in err and "Traceback" not in err
