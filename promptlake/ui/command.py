"""``promptlake ui``: its arguments and its command (the web stack loads only when it runs)."""

from __future__ import annotations

import argparse
import sys

from promptlake.query_cli import DATA_DIR_HELP

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``ui``."""
    p = sub.add_parser("ui", help="the search page: CLIP loaded once, a page and a JSON API")
    p.add_argument("--data-dir", help=DATA_DIR_HELP)
    p.add_argument("--host", help="address to bind (default $PROMPTLAKE_UI_HOST or 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default $PROMPTLAKE_UI_PORT or 8700)")


def cmd_ui(args: argparse.Namespace) -> int:
    from promptlake.ui.app import serve
    from promptlake.ui.service import PageService

    service = PageService(args.data_dir, {"ui_host": args.host, "ui_port": args.port})
    host, port = service.settings.ui_host, service.settings.ui_port
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
    serve(service, host, port)
    return 0
