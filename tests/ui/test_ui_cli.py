"""The CLI through a running search page, with real processes: ``promptlake search`` and
``refine`` ask a ``promptlake ui`` serving the same data dir (same hits as without it, none of
torch, transformers, Prefect or chDB imported), fall back to their own search when it is gone or
answers an error; and the API they use (``/api/info``, ``/api/facets``, refine with an image)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import requests

from promptlake.settings import get_settings
from promptlake.storage.datadir.layout import DataDir
from promptlake.storage.datadir.vectors import claim_namespace
from promptlake.tasks.metadata import read_metadata
from promptlake.tasks.plan import read_shard
from promptlake.tasks.query.resolve import query_settings
from promptlake.ui.client import fingerprint, page_notes
from tests.helpers.ui_server import build_store, free_port, wait_for
from tests.operations.test_terminal import probe

HEAVY = {"torch", "transformers", "prefect", "chdb", "openai", "clickhouse_connect", "fastapi"}


@pytest.fixture(scope="module")
def store(tmp_path_factory, tiny_clip):
    return build_store(tmp_path_factory.mktemp("ui-cli"), tiny_clip)


@pytest.fixture(scope="module")
def env():
    made = {**os.environ, "PROMPTLAKE_DEVICE": "cpu", "PROMPTLAKE_PRECISION": "fp32"}
    made.pop("PROMPTLAKE_CLIP_MODEL", None)  # the data dir says which model
    return made


def png(store, name: str = "p0003") -> str:
    return str(store.data_dir.parent / "source" / "images" / f"{name}.png")


def queries(store) -> dict[str, list[str]]:
    """The commands compared with and without the page (all answered by the page when up)."""
    data, prompt = ["--data-dir", str(store.data_dir)], read_shard_prompt(store, 5)
    return {
        "text": ["search", prompt, "-k", "8", "--json", *data],
        "image": [
            "search",
            "--image",
            png(store),
            "--no-metadata",
            "--target",
            "images",
            "-k",
            "5",
            "--json",
            *data,
        ],
        "refine": ["refine", "a cat", "-n", "2", "-k", "6", "--llm", "offline", "--json", *data],
    }


def read_shard_prompt(store, i: int) -> str:
    return read_shard(DataDir(store.data_dir), "00000")["prompt"][i].as_py()


def run(env, *args: str, importtime: bool = False) -> tuple[subprocess.CompletedProcess, set]:
    """``promptlake ARGS`` in a new process: how it ended, and the top-level modules it
    imported (with ``importtime``)."""
    flags = ["-X", "importtime"] if importtime else []
    done = subprocess.run(
        [sys.executable, *flags, "-m", "promptlake.cli", "-v", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = done.stderr.splitlines()
    imported = {ln.rsplit("|", 1)[-1].strip().split(".")[0] for ln in lines if "import time:" in ln}
    return done, imported


@pytest.fixture(scope="module")
def cold(store, env):
    """Each query answered without a page (three processes at once: they take turns)."""
    procs = {
        name: subprocess.Popen(
            [sys.executable, "-m", "promptlake.cli", *argv],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, argv in queries(store).items()
    }
    out = {}
    for name, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, stderr[-3000:]
        out[name] = stdout
    return out


@pytest.fixture(scope="module")
def page(store, env, cold):
    """``promptlake ui`` on the store, started after the cold answers were taken."""
    port = free_port()
    cmd = [sys.executable, "-m", "promptlake.cli", "ui", "--data-dir", str(store.data_dir)]
    proc = subprocess.Popen(
        [*cmd, "--port", str(port)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        assert wait_for(url + "/api/info", proc).json()["ready"]
        yield proc, url
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            proc.communicate(timeout=60)


def same_hits(page_hits: list[dict], cold_hits: list[dict]) -> None:
    """The same rows in the same order with the same fields; distances within 1e-5 (the page
    runs torch on one thread, a CLI on all: float sums in another order)."""
    assert [h["id"] for h in page_hits] == [h["id"] for h in cold_hits]
    for mine, theirs in zip(page_hits, cold_hits, strict=True):
        assert abs(mine.pop("distance") - theirs.pop("distance")) < 1e-5
        assert mine == theirs


def test_search_and_refine_ask_the_page_and_import_nothing_heavy(store, env, cold, page):
    _, url = page
    for name, argv in queries(store).items():
        done, imported = run(env, *argv, importtime=True)
        assert done.returncode == 0, done.stderr[-3000:]
        assert f"asking the search page at {url}" in done.stderr
        assert not imported & HEAVY, (name, imported & HEAVY)
        assert {"urllib3", "promptlake"} <= imported  # the parsing sees what it should
        mine, theirs = json.loads(done.stdout), json.loads(cold[name])
        if name == "refine":
            same_hits(mine.pop("sources"), theirs.pop("sources"))
            assert mine == theirs  # idea, refiner, variants and what each drew from
            continue
        assert mine[0]["id"] == ("p0005" if name == "text" else "p0003")
        assert mine[0]["distance"] < 1e-4
        same_hits(mine, theirs)
    # an image's own metadata answers a reverse search with no model, page or store at all
    done, imported = run(env, "search", "--image", png(store), "--data-dir", str(store.data_dir),
                         importtime=True)  # fmt: skip
    assert read_metadata(Path(png(store)).read_bytes()).prompt in done.stdout
    assert not imported & HEAVY and "asking the search page" not in done.stderr


def test_the_page_is_announced_with_the_settings_a_cli_compares(tmp_path, store, page):
    proc, url = page
    notes = page_notes(DataDir(store.data_dir))
    assert [(n["url"], n["pid"]) for n in notes] == [(url, proc.pid)]
    info = requests.get(url + "/api/info", timeout=60).json()
    overrides = {"device": "cpu", "precision": "fp32"}
    mine = query_settings(get_settings(data_dir=str(store.data_dir), **overrides))
    assert info["fingerprint"] == fingerprint(mine) and info["pid"] == proc.pid
    assert fingerprint(mine.model_copy(update={"image_size": 128})) != info["fingerprint"]
    code, heavy, err = probe(tmp_path, "ui", "--data-dir", str(store.data_dir))  # a second one
    assert code == 2 and heavy == [], err
    assert f"a search page already serves {store.data_dir} at {url} (pid {proc.pid})" in err


def test_the_api_offers_facets_deep_pages_and_refine_with_an_image(store, page):
    _, url = page
    data = DataDir(store.data_dir)
    rows = [r for s in ("00000", "00001") for r in read_shard(data, s).to_pylist()]
    facets = requests.get(url + "/api/facets", params={"target": "prompts"}, timeout=60).json()
    sites = Counter(r["source_site"] for r in rows) + Counter({"feedback": 2})
    assert dict(map(tuple, facets["source_site"])) == dict(sites)
    assert facets["rows"] == 42 and facets["max_width"] == 256
    assert dict(map(tuple, facets["origin"])) == {"dataset": 40, "feedback": 2}
    bad = requests.get(url + "/api/facets", params={"target": "x"}, timeout=60)
    assert bad.status_code == 400 and "prompts or images" in bad.json()["error"]
    deep = requests.get(url + "/api/search", params={"text": "a cat", "k": 1000}, timeout=60)
    assert deep.status_code == 200 and len(deep.json()["hits"]) == 42
    too = requests.get(url + "/api/search", params={"text": "a cat", "k": 1001}, timeout=60)
    assert too.status_code == 400 and "less than or equal to 1000" in too.json()["error"]
    body = Path(png(store)).read_bytes()
    got = requests.post(
        url + "/api/refine", files={"image": ("p.png", body)}, data={"n": "3", "k": "1"},
        timeout=60,
    ).json()  # fmt: skip
    assert got["exact"]["prompt"] == got["idea"] == read_metadata(body).prompt
    assert got["asked"] == 3 and len(got["variants"]) < 3
    assert "among the 1 neighbour " in got["shortfall"], got["shortfall"]


def test_a_failing_page_then_a_gone_page_means_a_search_here(store, env, cold, page):
    proc, url = page
    data = ["--data-dir", str(store.data_dir)]
    done, _ = run(env, "refine", "a cat", "--llm", "openai", *data)  # no LLM configured
    assert done.returncode != 0  # -v: the traceback of the same error, raised here
    assert f"the search page at {url} answered 503: --llm openai needs an endpoint" in done.stderr
    assert "refining here" in done.stderr
    assert "LLMError: --llm openai needs an endpoint" in done.stderr.splitlines()[-1]
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    done, imported = run(env, *queries(store)["text"], importtime=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "torch" in imported and "asking the search page" not in done.stderr
    same_hits(json.loads(done.stdout), json.loads(cold["text"]))
    assert page_notes(DataDir(store.data_dir)) == []  # the dead page's note is gone


def test_ui_starts_on_an_empty_data_dir_only_while_an_ingest_fills_it(tmp_path):
    from promptlake import preflight
    from promptlake.storage.datadir import activity
    from promptlake.ui.command import check_data

    settings = get_settings(data_dir=str(tmp_path / "new"))
    (tmp_path / "new").mkdir()
    with pytest.raises(preflight.InputError, match="holds no embeddings yet"):
        check_data(settings)
    with activity.running(DataDir(settings.data_dir), "ingest big.csv (until index)"):
        said = check_data(settings)
    assert said.startswith("waiting for `ingest big.csv (until index)` (pid ")
    assert said.endswith("to embed a first shard; searches answer 503 until then")


def test_ui_refuses_a_busy_port_before_loading_anything(tmp_path):
    data = DataDir(tmp_path / "data")
    claim_namespace(data, "m@r", {"model": "m", "revision": "r", "dim": 4})  # "embedded"
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = str(held.getsockname()[1])
        code, heavy, err = probe(tmp_path, "ui", "--data-dir", str(data.root), "--port", port)
    assert code == 2 and heavy == [], err
    assert (
        err == f"promptlake: error: port {port} on 127.0.0.1 is in use: pass --port or set "
        "PROMPTLAKE_UI_PORT\n"
    )
