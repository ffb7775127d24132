"""The search page for tests: a store built like the demo's (drawn images carrying A1111
metadata, several sites, a few feedback rows with lineage) and the real app served by uvicorn on
a free loopback port, in a thread of the test process (which holds the embedded store)."""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from pathlib import Path

import requests
import uvicorn

from promptlake.settings import Settings
from promptlake.storage.datadir.layout import DataDir
from promptlake.ui.app import create_app
from promptlake.ui.service import PageService

FEEDBACK_IDEA = "a lighthouse at dusk"


def build_store(root: Path, tiny_clip: str, n: int = 40, feedback: bool = True) -> Settings:
    """``n`` demo rows through download, plan, fetch, embed, load and index (and one feedback
    input written back, offline), with the tiny CLIP."""
    from promptlake.demo import make_dataset
    from promptlake.tasks import embed, fetch, index, load
    from promptlake.tasks.download import download
    from promptlake.tasks.feedback import FeedbackInput, FeedbackOptions, run_input
    from promptlake.tasks.plan import plan

    settings = Settings(
        data_dir=root / "data",
        clip_model=tiny_clip,
        device="cpu",
        precision="fp32",
        allow_file_urls=True,
        fetch_workers=4,
        text_batch=16,
        image_batch=16,
    )
    data = DataDir(settings.data_dir)
    csv = make_dataset(root / "source", n)
    for shard in plan(download(str(csv), data), data, shard_size=20).shards:
        fetch.run_shard(shard.name, data, settings)
        embed.run_shard(shard.name, data, settings)
        load.run_shard(shard.name, data, settings)
    if feedback:
        opts = FeedbackOptions(n=2, k=6, llm="offline")
        run_input(FeedbackInput(FEEDBACK_IDEA, "idea"), data, settings, opts)
    index.run(data, settings)
    return settings


def page_service(settings: Settings, **overrides: object) -> PageService:
    """The page's service over ``settings``' data dir (its model: the one embedded with)."""
    base = {"device": "cpu", "precision": "fp32"}
    return PageService(str(settings.data_dir), {**base, **overrides})


class PageServer:
    """``with PageServer(service) as page:`` the app at ``page.url`` until the block ends."""

    def __init__(self, service: PageService) -> None:
        self.service = service
        config = uvicorn.Config(
            create_app(service), host="127.0.0.1", port=0, log_level="warning", lifespan="on"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.url = ""

    def __enter__(self) -> PageServer:
        self.thread.start()
        deadline = time.monotonic() + 180  # the lifespan loads CLIP first: slow on a busy box
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the search page did not start")
            time.sleep(0.05)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(url: str, proc: subprocess.Popen, seconds: float = 240) -> requests.Response:
    """The first answer of a server that ``proc`` is starting (it must not exit meanwhile)."""
    deadline = time.monotonic() + seconds
    while True:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else proc.returncode
        try:
            return requests.get(url, timeout=5)
        except requests.ConnectionError:
            assert time.monotonic() < deadline, f"{url} did not answer"
            time.sleep(0.2)
