"""The ``promptlake`` command: the same flows and reports as the Prefect UI, from a shell."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from promptlake import query_cli
from promptlake.query_cli import DATA_DIR_HELP
from promptlake.storage.records import STAGES
from promptlake.ui import command as ui_command

TEMPORARY_SERVER_ENV = "PROMPTLAKE_PREFECT_SERVER_TEMPORARY"


def _ingest_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ingest", help="download, plan and fetch a dataset (resumable)")
    p.add_argument(
        "source", help="path (.csv, .csv.gz, .parquet), http(s) URL or kaggle:owner/name"
    )
    p.add_argument("--data-dir", help=DATA_DIR_HELP)
    p.add_argument(
        "--shard-size", type=int, help="valid rows per shard ($PROMPTLAKE_SHARD_SIZE or 1000)"
    )
    p.add_argument("--limit", type=int, help="read only the first N rows")
    p.add_argument("--until", choices=STAGES, default=STAGES[-1], help="last stage to run")
    p.add_argument("--retry-failed", action="store_true", help="re-fetch failed rows")
    p.add_argument("--force", action="store_true", help="redo finished shards")
    p.add_argument("--workers", type=int, help="HTTP threads per shard")
    p.add_argument("--shard-concurrency", type=int, help="shards processed at once")
    p.add_argument(
        "--runner",
        choices=["thread", "process", "dask"],
        help="shard tasks in threads, worker processes or on a Dask cluster "
        "($PROMPTLAKE_RUNNER or process)",
    )
    p.add_argument("--dask-address", help="Dask scheduler (tcp://host:8786); none: local cluster")
    p.add_argument("--model", help="CLIP hub name or local directory ($PROMPTLAKE_CLIP_MODEL)")
    p.add_argument("--device", help="auto (default), cpu, cuda, cuda:N or mps")
    p.add_argument(
        "--allow-file-urls", action="store_true", default=None, help="allow file:// image URLs"
    )


def _ingest_images_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "ingest-images",
        help="ingest a folder of your own generated images: prompts from their A1111/ComfyUI "
        "metadata, images from the files",
    )
    p.add_argument("source", metavar="DIR", help="folder of .png/.jpg/.webp images (recursive)")
    p.add_argument("--data-dir", help=DATA_DIR_HELP)
    p.add_argument(
        "--shard-size", type=int, help="valid rows per shard ($PROMPTLAKE_SHARD_SIZE or 1000)"
    )
    p.add_argument("--until", choices=STAGES, default=STAGES[-1], help="last stage to run")
    p.add_argument("--force", action="store_true", help="redo finished shards")
    p.add_argument("--model", help="CLIP hub name or local directory ($PROMPTLAKE_CLIP_MODEL)")
    p.add_argument("--device", help="auto (default), cpu, cuda, cuda:N or mps")
    p.add_argument(
        "--watch",
        action="store_true",
        help="keep going: scan the folder again every --interval seconds and ingest what was "
        "added, replaced or deleted, until Ctrl-C",
    )
    p.add_argument(
        "--interval", type=float, help="seconds between scans ($PROMPTLAKE_WATCH_INTERVAL or 300)"
    )
    p.set_defaults(
        limit=None,
        retry_failed=False,
        workers=None,
        shard_concurrency=None,
        runner=None,
        dask_address=None,
        allow_file_urls=True,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="promptlake", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _ingest_parser(sub)
    _ingest_images_parser(sub)
    query_cli.add_parsers(sub)
    ui_command.add_parser(sub)
    rs = sub.add_parser("resume", help="rerun the failed and missing shards of a data dir")
    rs.add_argument("--data-dir", help=DATA_DIR_HELP)
    rs.add_argument("--retry-failed", action="store_true", help="re-fetch failed rows too")
    rs.add_argument("--runner", choices=["thread", "process", "dask"], help="override the runner")
    fb = sub.add_parser("feedback", help="refine weak searches and ideas back into the store")
    fb.add_argument("ideas", nargs="*", help="ideas to improve the store for")
    fb.add_argument("--data-dir", help=DATA_DIR_HELP)
    fb.add_argument("--no-searches", action="store_true", help="only the given ideas")
    fb.add_argument(
        "--max-inputs", type=int, help="inputs this run ($PROMPTLAKE_FEEDBACK_MAX_INPUTS or 20)"
    )
    fb.add_argument("-n", type=int, help="variants per input ($PROMPTLAKE_REFINE_N or 3)")
    fb.add_argument("--llm", choices=["auto", "offline", "openai"], default="auto")
    fb.add_argument("--generate", action="store_true", help="an image per variant (GENERATOR)")
    sv = sub.add_parser("serve", help="serve the deployments (ingest, resume, feedback, …)")
    sv.add_argument("--feedback-cron", help="feedback schedule (default $PROMPTLAKE_FEEDBACK_CRON)")
    sv.add_argument("--data-dir", help="data dir the deployments default to")
    sv.add_argument(
        "--watch-folder",
        help="also serve ingest-folder: keep the store equal to this folder of images "
        "($PROMPTLAKE_WATCH_FOLDER)",
    )
    sv.add_argument(
        "--watch-interval", type=float, help="seconds between scans ($PROMPTLAKE_WATCH_INTERVAL)"
    )
    st = sub.add_parser("status", help="what a data directory holds, per stage")
    st.add_argument("--data-dir", help=DATA_DIR_HELP)
    st.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


def cmd_ingest(args: argparse.Namespace) -> int:
    from promptlake.flows.ingest import ingest
    from promptlake.flows.params import IngestParams

    params = IngestParams(
        source=args.source,
        data_dir=args.data_dir,
        shard_size=args.shard_size,
        limit=args.limit,
        until=args.until,
        retry_failed=args.retry_failed,
        force=args.force,
        shard_concurrency=args.shard_concurrency,
        runner=args.runner,
        dask_address=args.dask_address,
        clip_model=args.model,
        device=args.device,
        fetch_workers=args.workers,
        allow_file_urls=args.allow_file_urls,
        progress=sys.stderr.isatty(),
    )
    if getattr(args, "watch", False):
        return watch(params, args.interval)
    return run_then_status(ingest, params)


def watch(params, interval: float | None) -> int:
    """Ingest a folder again and again, every ``interval`` seconds, until Ctrl-C: what was added,
    replaced or deleted since the last round reaches the store."""
    import time

    from promptlake.flows.ingest import ShardsFailed, ingest

    every = interval or params.settings().watch_interval
    seen = 0
    try:
        with prefect_api():
            while True:
                try:
                    plan = ingest(params).plan
                    new = plan.generations[seen:] if plan else []
                    seen = len(plan.generations) if plan else seen
                    print(f"watch: {params.source}: " + _round(new), flush=True)
                except ShardsFailed as exc:  # a broken file must not end the watch
                    print(f"promptlake: {exc}", file=sys.stderr, flush=True)
                time.sleep(every)
    except KeyboardInterrupt:
        print("watch: stopped", file=sys.stderr)
        return 130


def _round(generations: list) -> str:
    if not generations:
        return "no change"
    g = generations[-1]
    return f"+{g.added} added, {g.changed} changed, -{g.removed} removed"


def run_then_status(flow_fn, params) -> int:
    """Run an ingest-like flow, then print the data dir's status (exit 1 on failed shards)."""
    from promptlake.flows.ingest import ShardsFailed

    try:
        with prefect_api():
            flow_fn(params)
    except ShardsFailed as exc:
        print(f"promptlake: {exc}", file=sys.stderr)
        return 1
    data_dir = str(params.settings().data_dir)
    return cmd_status(argparse.Namespace(data_dir=data_dir, json=False))


@contextmanager
def prefect_api() -> Iterator[None]:
    """Use the configured Prefect API (environment, profile); without one, start one temporary
    Prefect server and export its URL, so that shard tasks in worker processes report to the
    flow's server instead of starting their own."""
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import PREFECT_API_URL, temporary_settings

    configured = PREFECT_API_URL.value()  # the environment, a Prefect profile or a test harness
    if configured:
        exported = "PREFECT_API_URL" not in os.environ
        os.environ.setdefault("PREFECT_API_URL", configured)  # for worker processes
        try:
            yield
        finally:
            if exported:
                del os.environ["PREFECT_API_URL"]
        return

    server = SubprocessASGIServer()
    server.start()
    os.environ["PREFECT_API_URL"] = server.api_url
    os.environ[TEMPORARY_SERVER_ENV] = "1"  # it cannot free slots of killed runs: see embed
    try:
        with temporary_settings({PREFECT_API_URL: server.api_url}):
            yield
    finally:
        from prefect.logging.handlers import APILogHandler

        APILogHandler().flush()  # send the run's last log lines before the server goes
        del os.environ["PREFECT_API_URL"], os.environ[TEMPORARY_SERVER_ENV]
        server.stop()


def cmd_resume(args: argparse.Namespace) -> int:
    from promptlake.flows.ingest import resume
    from promptlake.flows.params import ResumeParams

    params = ResumeParams(
        data_dir=args.data_dir,
        retry_failed=args.retry_failed,
        runner=args.runner,
        progress=sys.stderr.isatty(),
    )
    return run_then_status(resume, params)


def cmd_feedback(args: argparse.Namespace) -> int:
    from promptlake.flows.feedback import FeedbackFailed, feedback_flow
    from promptlake.flows.params import FeedbackParams

    params = FeedbackParams(
        data_dir=args.data_dir,
        ideas=args.ideas,
        use_searches=not args.no_searches,
        max_inputs=args.max_inputs,
        n=args.n,
        llm=args.llm,
        generate=args.generate,
    )
    try:
        with prefect_api():
            done = feedback_flow(params)
    except FeedbackFailed as exc:
        print(f"promptlake: {exc}", file=sys.stderr)
        return 1
    for st in done:
        print(f"{st.extra['input']}  ({st.extra['trigger']}, {st.extra['refiner']})")
        for rid, prompt in zip(st.extra["ids"], st.extra.get("prompts", []), strict=False):
            print(f"  + {rid}  {prompt}")
    print(f"feedback: {len(done)} inputs, {sum(st.rows for st in done)} prompts written back")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from promptlake.deployments.serve import serve_all
    from promptlake.settings import get_settings

    # flow runs resolve their settings from this process's environment: flags join it
    paths = {"data_dir": args.data_dir, "watch_folder": args.watch_folder}
    others = {"feedback_cron": args.feedback_cron, "watch_interval": args.watch_interval}
    for name, value in {**paths, **others}.items():
        if value is not None:
            shown = os.path.abspath(value) if name in paths else str(value)
            os.environ[f"PROMPTLAKE_{name.upper()}"] = shown
    serve_all(get_settings())
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from promptlake.settings import get_settings, store_url
    from promptlake.storage.layout import DataDir
    from promptlake.storage.status import format_status, status

    settings = get_settings(data_dir=args.data_dir)
    report = status(DataDir(settings.data_dir), store_url(settings))
    print(json.dumps(report, indent=2) if args.json else format_status(report))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``promptlake`` console script."""
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # Prefect's 20 s for its temporary server is too short on a busy 2-core machine
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    if sys.stderr.isatty():  # per-task log lines would tear the progress bars apart
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    args = build_parser().parse_args(argv)
    handler = {
        "ingest": cmd_ingest,
        "ingest-images": cmd_ingest,
        "search": query_cli.cmd_search,
        "refine": query_cli.cmd_refine,
        "resume": cmd_resume,
        "serve": cmd_serve,
        "feedback": cmd_feedback,
        "status": cmd_status,
        "ui": ui_command.cmd_ui,
    }[args.command]
    try:
        return handler(args)
    except (ValueError, RuntimeError, FileNotFoundError) as exc:
        print(f"promptlake: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
