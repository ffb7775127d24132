"""A real Prefect server with its UI, shared by the tests that need one: the UI's run forms and
artifact pages in a browser (v1 at /, v2 at /v2; the test harness serves no UI), schedules (the
harness runs no scheduler; this one looks every second) and process work pools."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.helpers.fault_server import free_port


@contextmanager
def prefect_ui_server(home: Path) -> Iterator[str]:
    """``prefect server start`` with its own ``PREFECT_HOME`` until the block ends; yields its
    base URL (the API is at ``/api``)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"} | {
        "PREFECT_HOME": str(home),
        "PREFECT_UI_API_URL": f"{url}/api",  # else the UI asks 127.0.0.1:4200
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "1",
        "PREFECT_SERVER_SERVICES_SCHEDULER_RECENT_DEPLOYMENTS_LOOP_SECONDS": "1",
    }
    cmd = [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1"]
    log = home / "server.log"
    with open(log, "wb") as out:  # a pipe nobody reads could fill and stop the server
        proc = subprocess.Popen(
            [*cmd, "--port", str(port), "--no-late-runs"], env=env, stdout=out, stderr=out
        )
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                if httpx.get(f"{url}/api/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(
                    f"the Prefect server did not start:\n{log.read_text()[-3000:]}"
                )
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=60)


@contextmanager
def api_of(url: str) -> Iterator[str]:
    """This process's Prefect client pointed at ``url`` (an API) for the block. Flows run in it
    leave events and log lines queued for that server; they are sent before the block ends,
    while the server still answers: a queue left for a server that has gone makes Prefect's own
    drain at the end of the session (the test harness's exit) wait forever."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: url}):
        try:
            yield url
        finally:
            # drain_all returns an un-awaited coroutine when this thread runs an event loop
            # (Playwright's sync API does): drain from a thread that has none, and wait
            for worker in (APILogWorker, EventsWorker):
                drainer = threading.Thread(
                    target=worker.drain_all, kwargs={"timeout": 60, "at_exit": False}
                )
                drainer.start()
                drainer.join()
