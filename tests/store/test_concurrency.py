"""Many processes, one embedded store, end to end: `promptlake serve` against the test Prefect
server and `promptlake ui` on the same data dir; an ingest deployment run, and while it loads:
five searches from deployments at once, five CLI searches, thirty API searches and a feedback run.
All complete; the store then holds each row once, and the feedback rows."""

import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from prefect.client.orchestration import get_client
from prefect.deployments import run_deployment

from promptlake.settings import Settings, store_url
from promptlake.storage.datadir.layout import DataDir
from promptlake.storage.datadir.markers import Markers
from promptlake.storage.store import open_store
from tests.conftest import write_csv
from tests.helpers.fault_server import free_port
from tests.operations.test_deployments import serving

pytestmark = pytest.mark.usefixtures("prefect_server")


def _rows(server, start, n):
    styles = ["oil painting", "watercolor", "digital art", "pencil sketch"]
    return [
        [f"r{i}", f"a castle number {i}, {styles[i % 4]}", server.url("img", f"r{i}"), 64, 64, "s"]
        for i in range(start, start + n)
    ]


def _wait(ready, seconds, what):
    deadline = time.time() + seconds
    while not ready():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


@pytest.mark.timeout(1200)
def test_ingest_searches_page_and_feedback_share_one_store(tmp_path, server, tiny_clip):
    data_dir = tmp_path / "default"  # the serving process's PROMPTLAKE_DATA_DIR
    env = {
        **os.environ,
        "PROMPTLAKE_CLIP_MODEL": tiny_clip,
        "PROMPTLAKE_DEVICE": "cpu",
        "PROMPTLAKE_RUNNER": "thread",
    }
    env.pop("PREFECT_API_URL", None)
    src = tmp_path / "prompts.csv"
    write_csv(src, _rows(server, 0, 40))
    first = [sys.executable, "-m", "promptlake.cli", "ingest", str(src), "--shard-size", "10"]
    subprocess.run([*first, "--data-dir", str(data_dir)], env=env, check=True, timeout=600)
    write_csv(src, _rows(server, 0, 240))  # the source grew: 20 new shards to load

    port = free_port()
    page_cmd = ["ui", "--data-dir", str(data_dir), "--port", str(port)]
    ui = subprocess.Popen(
        [sys.executable, "-m", "promptlake.cli", *page_cmd],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    page = f"http://127.0.0.1:{port}"
    try:
        _wait(lambda: _ready(page), 300, "the search page")
        with serving(
            tmp_path, tiny_clip, PROMPTLAKE_RUNNER="thread", PROMPTLAKE_SHARD_SIZE="10"
        ) as log:
            ingest = run_deployment("ingest/ingest", parameters={"source": str(src)}, timeout=0)
            loads = Markers(DataDir(data_dir), "load")
            _wait(lambda: len(loads.all_done()) > 4, 600, "the new shards' loads")
            outcomes = _crowd(page, env, data_dir)
            _wait(lambda: _final(ingest.id), 900, log.read_text()[-3000:])
            with get_client(sync_client=True) as client:
                assert client.read_flow_run(ingest.id).state.is_completed()
        assert outcomes["deployment searches"] == ["COMPLETED"] * 5
        assert outcomes["cli searches"] == [0] * 5
        assert outcomes["api searches"] == [200] * 30
        assert outcomes["feedback"] == 0
    finally:
        ui.send_signal(signal.SIGINT)
        ui.wait(60)
    store = open_store(store_url(Settings(data_dir=data_dir)))
    q = "SELECT origin, count(), uniqExact(id) FROM promptlake.{} GROUP BY origin ORDER BY origin"
    prompts = store.client.query(q.format("prompts")).result_rows
    assert prompts[0] == ("dataset", 240, 240)  # each row once
    assert prompts[1][0] == "feedback" and prompts[1][1] == prompts[1][2] > 0


def _ready(page: str) -> bool:
    try:
        return requests.get(page + "/healthz", timeout=5).json()["ready"]
    except requests.RequestException:
        return False


def _final(run_id) -> bool:
    with get_client(sync_client=True) as client:
        return client.read_flow_run(run_id).state.is_final()


def _crowd(page, env, data_dir) -> dict[str, list]:
    """Everything at once, while the ingest loads: deployments, CLI, API and feedback."""
    cli = [sys.executable, "-m", "promptlake.cli"]

    def deployment_search(i):
        run = run_deployment("search/search", parameters={"text": f"a castle {i}"}, timeout=900)
        return run.state.type.value

    def cli_search(i):
        argv = [*cli, "search", f"a castle {i}", "--data-dir", str(data_dir)]
        return subprocess.run(argv, env=env, capture_output=True, timeout=900).returncode

    def api_search(i):
        """As a client should: a 503 (the store held longer than the page waits, on a busy
        machine) says when to ask again; anything else is the answer."""
        for _ in range(60):
            got = requests.get(page + "/api/search", params={"text": f"castle {i}"}, timeout=900)
            if got.status_code != 503:
                return got.status_code
            assert got.json()["error"] and got.headers["Retry-After"]  # a reason, a time
            time.sleep(float(got.headers["Retry-After"]))
        return got.status_code

    def feedback():
        argv = [*cli, "feedback", "a castle made of glass", "--no-searches", "-n", "2"]
        argv += ["--data-dir", str(data_dir)]
        return subprocess.run(argv, env=env, capture_output=True, timeout=900).returncode

    with ThreadPoolExecutor(max_workers=41) as pool:
        jobs = {
            "deployment searches": [pool.submit(deployment_search, i) for i in range(5)],
            "cli searches": [pool.submit(cli_search, i) for i in range(5)],
            "api searches": [pool.submit(api_search, i) for i in range(30)],
            "feedback": pool.submit(feedback),
        }
        out = {k: [f.result() for f in v] if isinstance(v, list) else v.result()
               for k, v in jobs.items()}  # fmt: skip
    return out
