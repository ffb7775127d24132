"""The search page through a forced re-plan: ``promptlake ui`` and ``promptlake ingest --force``
as real processes on one data dir. The ingest pauses at four moments (its plan committed with
the embeddings cleared, its first shard loaded, inside reconcile's store turn, inside the index
build) while clients fire searches, image requests and health checks — and keep firing between
the pauses. The page answers 200 from what the store holds or 503 with a reason: never 500,
never a traceback in its log; ``/healthz`` always at once; a refine waiting on the LLM holds up
no search."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from promptlake.settings import store_url
from promptlake.storage.datadir import crashpoints
from promptlake.storage.store import open_store
from tests.helpers import ROOT
from tests.helpers.api_servers import ChatServer
from tests.helpers.crash_runs import ingest_env, start_cli
from tests.helpers.ui_server import build_store, free_port, wait_for

pytestmark = [pytest.mark.usefixtures("prefect_server"), pytest.mark.timeout(600)]
# the plan committed (embed/ cleared), the first new shard loaded, reconcile's delete done and
# the index added: the last two inside the ingest's turn with the store
PAUSES = ["plan/manifest.json", "state/load/*.json", "store:prompts:drop", "store:prompts:index"]
ALLOWED = {200, 304, 404, 503}


class Page:
    """Clients of the page: every answer kept as (moment, path, status, error text, seconds)."""

    def __init__(self, url: str) -> None:
        self.url, self.moment = url, "before"
        self.answers: list[tuple[str, str, int, str, float]] = []
        self.lock = threading.Lock()

    def get(self, path: str, *, moment: str | None = None, **params: str) -> requests.Response:
        """One request, kept under ``moment`` (default: the test's current one)."""
        moment = moment or self.moment
        start = time.monotonic()
        got = requests.get(self.url + path, params=params, timeout=120)
        took = time.monotonic() - start
        json_error = got.status_code >= 400 and "json" in got.headers.get("content-type", "")
        error = got.json().get("error", "") if json_error else ""
        with self.lock:
            self.answers.append((moment, path, got.status_code, error, took))
        return got

    def burst(self, ids: list[str]) -> None:
        """Searches, a stored row's image search, images and health checks, all at once."""
        calls = [("/api/search", {"text": f"a castle {i}", "k": "5"}) for i in range(6)]
        calls += [("/api/search", {"like": ids[0], "target": "images"})]
        calls += [(f"/img/{rid}", {}) for rid in ids[:4]] + [("/healthz", {})] * 3
        with ThreadPoolExecutor(len(calls)) as pool:
            list(pool.map(lambda c: self.get(c[0], **c[1]), calls))

    def of(self, moment: str, prefix: str) -> list[tuple[str, str, int, str, float]]:
        return [a for a in self.answers if a[0] == moment and a[1].startswith(prefix)]


@pytest.fixture(scope="module")
def store(tmp_path_factory, tiny_clip):
    settings = build_store(tmp_path_factory.mktemp("replan"), tiny_clip, n=40, feedback=False)
    open_store(store_url(settings)).close()  # one process at a time: hand it to the others
    return settings


@pytest.fixture(scope="module")
def llm() -> Iterator[ChatServer]:
    with ChatServer() as chat:
        yield chat


@pytest.fixture(scope="module")
def page(store, llm, tmp_path_factory) -> Iterator[tuple[Page, Path]]:
    log = tmp_path_factory.mktemp("page") / "page.log"
    port = free_port()
    env = {
        **os.environ,
        "PROMPTLAKE_DEVICE": "cpu",
        "PROMPTLAKE_PRECISION": "fp32",
        "PROMPTLAKE_UI_STORE_WAIT": "0.5",
        "PROMPTLAKE_UI_REFINE_SLOTS": "1",
        "PROMPTLAKE_LLM_BASE_URL": llm.base_url,
        "PROMPTLAKE_LLM_RETRIES": "0",
    }
    env.pop("PROMPTLAKE_CLIP_MODEL", None)
    argv = ["ui", "--data-dir", str(store.data_dir), "--port", str(port)]
    with open(log, "w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "promptlake.cli", *argv],
            cwd=ROOT,
            env=env,
            stdout=err,
            stderr=subprocess.STDOUT,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        assert wait_for(url + "/healthz", proc).json()["ready"], log.read_text()
        yield Page(url), log
    finally:
        proc.terminate()
        proc.wait(60)


def test_a_refine_waiting_on_the_llm_holds_up_no_search(page, llm):
    client, _ = page
    client.moment = "refine"
    llm.gate.clear()
    try:
        with ThreadPoolExecutor(1) as pool:
            slow = pool.submit(client.get, "/api/refine", idea="a castle", n="2")
            _wait_until(lambda: bool(llm.requests), "the refine's call to the LLM")
            other = client.get("/api/refine", idea="a lighthouse")  # its one slot is taken
            assert other.status_code == 503 and "waiting on the LLM" in other.json()["error"]
            for i in range(8):
                assert client.get("/api/search", text=f"a fox {i}").status_code == 200
            assert client.get("/healthz").status_code == 200 and client.answers[-1][4] < 5.0
            assert not slow.done()  # all that while, the refine still waited on the LLM
            llm.gate.set()
            assert slow.result().status_code == 200
    finally:
        llm.gate.set()


def test_the_page_through_a_forced_replan_answers_no_500(page, store, tiny_clip, tmp_path):
    client, log = page
    flags = tmp_path / "pauses"
    flags.mkdir()
    env = {
        **ingest_env(tiny_clip, tmp_path),
        crashpoints.ROOT: str(store.data_dir),
        crashpoints.AT: ",".join(PAUSES),
        crashpoints.ACTION: f"pause:{flags}",
    }
    src = store.data_dir.parent / "source" / "prompts.csv"
    ids = [f"p{i:04d}" for i in (3, 12, 25, 38)]
    argv = ["ingest", str(src), "--data-dir", str(store.data_dir), "--allow-file-urls"]
    argv += ["--force", "--shard-size", "40"]  # 2 shards become 1: reconcile drops rows
    stop = threading.Event()
    loop = threading.Thread(target=_keep_asking, args=(client, ids, stop), daemon=True)
    proc = start_cli(argv, env, tmp_path / "ingest.err")
    loop.start()
    try:
        for point in PAUSES:
            found = _wait_for_pause(flags, proc)
            assert found.name.startswith(re.sub(r"[/:]", "_", point.partition("*")[0])), found
            client.moment = point
            client.burst(ids)
            client.moment = "running"
            found.unlink()
        assert proc.wait(300) == 0, (tmp_path / "ingest.err").read_text()[-3000:]
    finally:
        stop.set()
        loop.join(60)
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
    client.moment = "after"
    client.burst(ids)

    statuses = {a[2] for a in client.answers}
    assert statuses <= ALLOWED, [a for a in client.answers if a[2] not in ALLOWED][:5]
    for moment, path, code, error, _ in client.answers:
        if code == 503:
            assert error and "unexpected error" not in error, (moment, path, error)
    for moment in [*PAUSES[:2], "after"]:  # the store holds rows and is not held: answers
        assert {a[2] for a in client.of(moment, "/api/search")} == {200}, moment
    for moment in PAUSES[2:]:  # the ingest holds the store: busy, and says who
        answers = client.of(moment, "/api/search")
        assert {a[2] for a in answers} == {503}, moment
        assert all("ingest" in a[3] or "flow run" in a[3] for a in answers), answers[0]
    health = [a for a in client.answers if a[1] == "/healthz"]
    assert health and {a[2] for a in health} == {200} and max(a[4] for a in health) < 5.0
    text = log.read_text()
    assert "Traceback" not in text and "Exception in ASGI application" not in text, text[-3000:]
    after = client.get("/api/search", text="a castle", k="40").json()["hits"]
    assert len(after) == 40 and len({h["id"] for h in after}) == 40  # every row, once


def _keep_asking(client: Page, ids: list[str], stop: threading.Event) -> None:
    """Between the pauses too: a search, an image and a health check, over and over."""
    n = 0
    while not stop.is_set():
        client.get("/api/search", moment="running", text=f"a lighthouse {n}", k="5")
        client.get(f"/img/{ids[n % len(ids)]}", moment="running")
        client.get("/healthz", moment="running")
        n += 1


def _wait_for_pause(flags: Path, proc: subprocess.Popen) -> Path:
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        found = sorted(flags.iterdir())
        if found:
            return found[0]
        assert proc.poll() is None, f"the ingest ended (exit {proc.returncode}) before a pause"
        time.sleep(0.05)
    raise AssertionError("the ingest never reached its next pause")


def _wait_until(ok, what: str, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not ok():
        assert time.monotonic() < deadline, f"waited {seconds} s for {what}"
        time.sleep(0.05)
