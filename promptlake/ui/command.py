"""``promptlake ui``: its arguments and its command. What can be refused is refused first, in one
line, before anything heavy loads: the data dir, another page on it, the port. Only then do the
web stack, torch and CLIP load. The page then announces itself in the data dir's
``state/running`` (``kind: page``, its URL): ``status`` shows it, and a CLI search finds it."""

from __future__ import annotations

import argparse
import contextlib
import errno
import socket
import sys
from typing import TYPE_CHECKING

from promptlake import preflight
from promptlake.query_cli import DATA_DIR_HELP
from promptlake.settings import Settings, store_url
from promptlake.storage.datadir import activity
from promptlake.storage.datadir.layout import DataDir

if TYPE_CHECKING:
    from promptlake.ui.service import PageService

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``ui``."""
    p = sub.add_parser("ui", help="the search page: CLIP loaded once, a page and a JSON API")
    p.add_argument("--data-dir", help=DATA_DIR_HELP)
    p.add_argument("--host", help="address to bind (default $PROMPTLAKE_UI_HOST or 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default $PROMPTLAKE_UI_PORT or 8700)")


def cmd_ui(args: argparse.Namespace) -> int:
    settings = preflight.settings(data_dir=args.data_dir, ui_host=args.host, ui_port=args.port)
    waiting = check_data(settings)
    host, port = settings.ui_host, settings.ui_port
    sock = bind(host, port)  # listens only once CLIP is warm: until then a CLI goes cold
    url = page_url(host, sock.getsockname()[1])
    from promptlake.ui.service import PageService  # torch, FastAPI: from here on

    service = PageService(args.data_dir, {"ui_host": host, "ui_port": port})
    if service.settings.ui_torch_threads:  # this process only: the page serves nothing else
        import torch

        torch.set_num_threads(service.settings.ui_torch_threads)
    if host not in LOOPBACK:
        print(
            f"promptlake ui: warning: listening on {host}, not only this machine: anyone who "
            "can reach it can search this store and upload images to it (there is no login)",
            file=sys.stderr,
        )
    service.warm_up()  # before serving: a model that will not load is a plain CLI error
    print(f"promptlake ui: {url} serves {service.settings.data_dir} (Ctrl-C stops)", flush=True)
    if waiting:
        print(f"promptlake ui: {waiting}", flush=True)
    serve(service, sock, url)
    return 0


def check_data(settings: Settings) -> str:
    """Refuse a data dir that is missing, or has nothing to search and no ingest running on
    it, or already has a page on its embedded store; returns what the page waits for, if any."""
    from promptlake.ui.client import page_notes

    data = DataDir(settings.data_dir)
    try:
        preflight.check_data_dir(data.root, needs="store")
    except preflight.InputError:
        ingests = (
            [n for n in activity.now(data) if n.get("kind") != "page"] if data.root.is_dir() else []
        )
        if not ingests:
            raise
        run = ingests[-1]
        return (
            f"waiting for `{run.get('what')}` (pid {run.get('pid')}) to embed a first shard; "
            "searches answer 503 until then"
        )
    pages = page_notes(data)
    if pages and store_url(settings).startswith("chdb://"):  # two pages would trade the store
        raise preflight.InputError(
            f"a search page already serves {data.root} at {pages[0]['url']} (pid "
            f"{pages[0]['pid']}): open that one, or stop it first"
        )
    return ""


def bind(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` (as uvicorn binds: SO_REUSEADDR), not yet listening."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise preflight.InputError(f"--host {host}: {exc.strerror}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise preflight.InputError(
                f"port {port} on {host} is in use: pass --port or set PROMPTLAKE_UI_PORT"
            ) from None
        raise preflight.InputError(f"cannot listen on {host} port {port}: {exc.strerror}") from None
    return sock


def page_url(host: str, port: int) -> str:
    """Where this machine reaches the page (a wildcard address means loopback)."""
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def serve(service: PageService, sock: socket.socket, url: str) -> None:
    """Serve on ``sock`` until interrupted, announced in the data dir meanwhile."""
    import uvicorn

    from promptlake.ui.app import create_app
    from promptlake.ui.client import PAGE_KIND

    config = uvicorn.Config(create_app(service), log_level="info")
    note = activity.running(service.data, f"search page {url}", kind=PAGE_KIND, url=url)
    # uvicorn raises the Ctrl-C again once it has shut down: that is the normal end
    with note, contextlib.suppress(KeyboardInterrupt):
        uvicorn.Server(config).run(sockets=[sock])
