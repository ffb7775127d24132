"""Runs started as an operator starts them: the Prefect UI's "Custom run" form in a real browser
(both UI versions) with only Source filled, on `promptlake serve` and on a process work pool's
worker, each in an environment other than the one that registered the deployments; and
`prefect deployment run … -p field=value`. The run resolves what was left blank where it runs:
the worker's data dir, the data dir's own shard size."""

from __future__ import annotations

import contextvars
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter

from promptlake.settings import get_settings
from promptlake.storage.datadir.layout import DataDir, read_json
from promptlake.storage.datadir.records import PlanManifest
from tests.conftest import artifacts_of, write_csv
from tests.helpers import ROOT
from tests.helpers.prefect_ui import api_of

CHROMIUM = "/usr/bin/chromium"
SHARDED = ("fetch", "embed", "load")
pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="needs Chromium: apt-get install -y chromium"
)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(
            executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"]
        )
        yield chromium
        chromium.close()


@pytest.fixture
def api(prefect_ui) -> Iterator[str]:
    """The UI server's API for this test, with no promptlake deployment left from another."""
    url = f"{prefect_ui}/api"
    with api_of(url), get_client(sync_client=True) as client:
        for dep in client.read_deployments():
            if "promptlake" in dep.tags:
                client.delete_deployment(dep.id)
        yield url


def submit_form(browser, base: str, deployment_id, ui: str, source: str, shot: Path) -> tuple:
    """Open the deployment's "Custom run" form in UI ``ui`` (v1 or v2), fill Source only and
    submit: the parameters the page sent, and the flow run it made."""
    page = browser.new_page(viewport={"width": 1280, "height": 1800})
    try:
        prefix = "/v2" if ui == "v2" else ""
        page.goto(f"{base}{prefix}/deployments/deployment/{deployment_id}/run")
        field = page.locator("textarea").first  # the main field leads the form
        field.wait_for(timeout=120_000)
        field.fill(source)
        page.screenshot(path=str(shot), full_page=True)
        for _ in range(5):  # a busy test server answers 503 for a moment; a person clicks again
            with page.expect_response(
                lambda r: "create_flow_run" in r.url, timeout=120_000
            ) as made:
                page.get_by_role("button", name="Submit").click()
            answer = made.value
            if answer.status != 503:
                break
        assert answer.ok, answer.text()
        return json.loads(answer.request.post_data)["parameters"], answer.json()["id"]
    finally:
        page.close()


def check_sent(sent: dict, schema: dict, source: str) -> None:
    """The form sent Source, and otherwise only fields whose code has a default (until, the
    plain switches), each at that default: no setting, no value of any process."""
    assert sent["source"] == source
    props = schema["properties"]
    for name, value in sent.items():
        if name != "source":
            assert "default" in props[name] and value == props[name]["default"], (name, value)


def final_state(run_id, log: Path, seconds: float = 400):
    deadline = time.monotonic() + seconds
    with get_client(sync_client=True) as client:
        while not (state := client.read_flow_run(run_id).state).is_final():
            assert time.monotonic() < deadline, f"{state.name}\n{log.read_text()[-3000:]}"
            time.sleep(1)
    return state


def sharded_task_runs(run_id) -> int:
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id={"any_": [run_id]}))
    return sum(1 for r in runs if r.name.rsplit("-", 1)[0] in SHARDED)


def environment(tmp_path: Path, tiny_clip: str, api: str, name: str, **more: str) -> dict:
    """The environment of one process that serves or works: its own data dir and settings."""
    return {
        **os.environ,
        "PREFECT_API_URL": api,
        "PROMPTLAKE_DATA_DIR": str(tmp_path / name),
        "PROMPTLAKE_CLIP_MODEL": tiny_clip,
        "PROMPTLAKE_DEVICE": "cpu",
        "PROMPTLAKE_RUNNER": "thread",
        "PROMPTLAKE_TASK_RETRIES": "0",
        **more,
    }


@contextmanager
def process(cmd: list[str], env: dict, log: Path, cwd: Path = ROOT) -> Iterator[Path]:
    """``cmd`` running in the background until the block ends (SIGTERM, then SIGKILL)."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield log
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _source(tmp_path: Path, server, n: int = 10) -> str:
    rows = [[f"t{i}", f"prompt {i}", server.url("img", f"t{i}"), 64, 64, "s"] for i in range(n)]
    return str(write_csv(tmp_path / "prompts.csv", rows))


def _shard_rows(data_dir: Path) -> list[int]:
    return [s.rows for s in PlanManifest.from_dict(read_json(DataDir(data_dir).manifest)).shards]


@pytest.mark.timeout(900)
def test_forms_on_serve_send_only_what_was_filled(
    tmp_path, server, tiny_clip, browser, prefect_ui, api, monkeypatch
):
    """Deployments registered under environment A; forms opened in both UIs; the serving process
    restarted with environment B (another data dir, planned with shard size 7, and another
    PROMPTLAKE_SHARD_SIZE) before they are submitted with only Source filled. Both runs take B's
    data dir and its own shard size; A is never written; ingest.json holds what was given."""
    from promptlake.deployments.serve import deployments
    from promptlake.tasks.download import download
    from promptlake.tasks.plan import plan

    source = _source(tmp_path, server)
    b = DataDir(tmp_path / "b")
    plan(download(source, b), b, shard_size=7)  # B's own size
    env_a = environment(tmp_path, tiny_clip, api, "a", PROMPTLAKE_SHARD_SIZE="4")
    for name in ("DATA_DIR", "SHARD_SIZE", "CLIP_MODEL", "RUNNER"):
        monkeypatch.setenv(f"PROMPTLAKE_{name}", env_a[f"PROMPTLAKE_{name}"])
    ids = _in_thread(lambda: {d.name: d.apply() for d in deployments(get_settings())})
    with get_client(sync_client=True) as client:
        schema = client.read_deployment(ids["ingest"]).parameter_openapi_schema
    assert str(tmp_path) not in json.dumps(schema)  # nothing of A's environment
    sent = {}
    for ui in ("v1", "v2"):
        shot = tmp_path / f"form-serve-{ui}.png"
        sent[ui] = submit_form(browser, prefect_ui, ids["ingest"], ui, source, shot)
        check_sent(sent[ui][0], schema, source)
    env_b = environment(tmp_path, tiny_clip, api, "b", PROMPTLAKE_SHARD_SIZE="5")
    serve = [sys.executable, "-m", "promptlake.cli", "serve"]
    with process(serve, env_b, tmp_path / "serve-b.log") as log:
        states = {ui: final_state(run_id, log) for ui, (_, run_id) in sent.items()}
        assert all(s.is_completed() for s in states.values()), (states, log.read_text()[-3000:])
        # one run did the work, the other waited for the data dir and found it done
        runs = sorted(sharded_task_runs(run_id) for _, run_id in sent.values())
        assert runs == [0, 2 * len(SHARDED)], runs
        assert _shard_rows(b.root) == [7, 3] and not (tmp_path / "a").exists()
        assert read_json(b.ingest_record) == {"format": 2, "source": source, "until": "index"}
        # a Prefect user's first try at another deployment: its main field as -p
        cmd = [sys.executable, "-m", "prefect", "deployment", "run", "search/search"]
        cmd += ["-p", "text=prompt 1", "-p", f"data_dir={b.root}", "-p", "k=3", "--watch"]
        done = subprocess.run(cmd, env=env_a, capture_output=True, text=True, timeout=400)
        assert done.returncode == 0, done.stdout[-2000:] + log.read_text()[-2000:]
    with get_client(sync_client=True) as client:
        (run,) = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(name={"any_": [_run_name(done.stdout)]})
        )
    (table,) = [a.data for a in artifacts_of(run.id) if a.key == "search-results-table"]
    assert (json.loads(table) if isinstance(table, str) else table)[0]["prompt"] == "prompt 1"


def _in_thread(fn):
    """``fn()`` in another thread: Prefect's sync calls turn into coroutines in a thread with a
    running event loop, as Playwright's is. (This registers what `promptlake serve` does.)"""
    with ThreadPoolExecutor(1) as pool:  # the settings (this test's API) are context variables
        return pool.submit(contextvars.copy_context().run, fn).result()


def _run_name(output: str) -> str:
    """The flow run's name in `prefect deployment run`'s output ("Created flow run 'name'.")."""
    line = next(x for x in output.splitlines() if "Created flow run" in x)
    return line.split("'")[1]


@pytest.mark.timeout(900)
def test_a_process_worker_resolves_its_own_environment(
    tmp_path, server, tiny_clip, browser, prefect_ui, api
):
    """`prefect deploy` from a shell with environment R; `prefect worker start` in another
    directory with environment W. `-p source=…` and the form with only Source filled both run
    on W's data dir at W's shard size; R's data dir is never made; a value out of bounds is
    refused before any run."""
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists

    with get_client(sync_client=True) as client, suppress(ObjectAlreadyExists):
        client.create_work_pool(WorkPoolCreate(name="promptlake", type="process"))
    env_r = environment(tmp_path, tiny_clip, api, "r", PROMPTLAKE_SHARD_SIZE="1000")
    deploy = [sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--all"]
    deploy += ["--prefect-file", "deployments/prefect.yaml"]
    done = subprocess.run(deploy, env=env_r, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    source = _source(tmp_path, server, n=6)
    w = tmp_path / "w"
    env_w = environment(
        tmp_path,
        tiny_clip,
        api,
        "w",
        PROMPTLAKE_SHARD_SIZE="3",
        PREFECT_WORKER_QUERY_SECONDS="1",
        PREFECT_WORKER_PREFETCH_SECONDS="1",
    )
    (tmp_path / "worker").mkdir()
    worker = [sys.executable, "-m", "prefect", "worker", "start", "--pool", "promptlake"]
    with process(worker, env_w, tmp_path / "worker.log", cwd=tmp_path / "worker") as log:
        cmd = [sys.executable, "-m", "prefect", "deployment", "run", "ingest/ingest"]
        ran = subprocess.run(
            [*cmd, "-p", f"source={source}", "-p", "until=plan", "--watch"],
            env=env_r,
            capture_output=True,
            text=True,
            timeout=400,
        )
        assert ran.returncode == 0, ran.stdout[-2000:] + log.read_text()[-3000:]
        assert _shard_rows(w) == [3, 3] and not (tmp_path / "r").exists()
        with get_client(sync_client=True) as client:
            dep = client.read_deployment_by_name("ingest/ingest")
        sent, run_id = submit_form(
            browser, prefect_ui, dep.id, "v1", source, tmp_path / "form-worker-v1.png"
        )
        check_sent(sent, dep.parameter_openapi_schema, source)
        state = final_state(run_id, log)
        assert state.is_completed(), (state.message, log.read_text()[-3000:])
        assert _shard_rows(w) == [3, 3] and sharded_task_runs(run_id) == 2 * len(SHARDED)
        refused = subprocess.run(
            [*cmd, "-p", f"source={source}", "-p", "shard_size=0"],
            env=env_r,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert refused.returncode != 0
        assert "less than the minimum of 1" in refused.stdout + refused.stderr
    assert not (tmp_path / "r").exists()
