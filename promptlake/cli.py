"""The ``promptlake`` command: the same flows and reports as the Prefect UI, from a shell."""

from __future__ import annotations

import argparse
import os
import sys
from importlib.metadata import PackageNotFoundError, version

from promptlake import commands, query_cli, runs, terminal
from promptlake.argtypes import Parser, number
from promptlake.query_cli import DATA_DIR_HELP
from promptlake.storage.datadir.records import STAGES
from promptlake.ui import command as ui_command

DESCRIPTION = (
    "promptlake: a searchable store of Stable Diffusion prompts and images, built and improved "
    "by Prefect flows. Each command prints a short summary; its full log goes to "
    "DATA_DIR/logs/ (-v: everything on the terminal)."
)
STAGE_LIST = ", ".join(STAGES)
RUNNERS = ["thread", "process", "dask"]


def _version() -> str:
    try:
        return version("promptlake")
    except PackageNotFoundError:  # run from a checkout that is not installed
        return "unknown"


def _shared_ingest_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", help=DATA_DIR_HELP)
    p.add_argument(
        "--shard-size",
        type=number("shard_size"),
        help="valid rows per shard ($PROMPTLAKE_SHARD_SIZE or 1000; a data dir keeps its own)",
    )
    p.add_argument(
        "--until",
        choices=STAGES,
        default=STAGES[-1],
        help=f"last stage to run, of {STAGE_LIST} (default: {STAGES[-1]}, all of them)",
    )
    p.add_argument("--force", action="store_true", help="re-plan and redo every finished shard")
    p.add_argument("--model", help="CLIP hub name or local directory ($PROMPTLAKE_CLIP_MODEL)")
    p.add_argument("--device", help="auto (default), cpu, cuda, cuda:N or mps")
    _wait_arg(p)


def _wait_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--wait",
        type=number("ingest_wait", kind=float),
        help="seconds to wait while another ingest holds the data dir ($PROMPTLAKE_INGEST_WAIT; "
        "default 0: say at once who holds it, exit status 75)",
    )


def _ingest_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "ingest",
        help=f"ingest a prompt dataset: {STAGE_LIST} (resumable)",
        description=f"Run the stages {STAGE_LIST} on SOURCE; rerun (or `promptlake resume`) to "
        "continue where it stopped: finished shards are skipped.",
    )
    p.add_argument(
        "source", help="path (.csv, .csv.gz, .parquet), http(s) URL or kaggle:owner/name"
    )
    _shared_ingest_args(p)
    p.add_argument("--limit", type=number(low=1), help="read only the first N rows")
    p.add_argument(
        "--retry-failed", action="store_true", help="fetch the failed rows of finished shards again"
    )
    p.add_argument(
        "--workers",
        type=number("fetch_workers"),
        help="HTTP threads per shard ($PROMPTLAKE_FETCH_WORKERS or 32)",
    )
    p.add_argument(
        "--shard-concurrency",
        type=number("shard_concurrency"),
        help="shards fetched at once ($PROMPTLAKE_SHARD_CONCURRENCY or 2)",
    )
    p.add_argument(
        "--runner",
        choices=RUNNERS,
        help="shard tasks in threads, worker processes or on a Dask cluster "
        "($PROMPTLAKE_RUNNER or process)",
    )
    p.add_argument("--dask-address", help="Dask scheduler (tcp://host:8786); none: local cluster")
    p.add_argument(
        "--allow-file-urls", action="store_true", default=None, help="allow file:// image URLs"
    )


def _ingest_images_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "ingest-images",
        help="ingest a folder of your own generated images: prompts from their metadata "
        f"(A1111, ComfyUI, InvokeAI, Fooocus, …), images from the files ({STAGE_LIST})",
    )
    p.add_argument("source", metavar="DIR", help="folder of .png/.jpg/.webp images (recursive)")
    _shared_ingest_args(p)
    p.add_argument(
        "--watch",
        action="store_true",
        help="keep going: scan the folder again every --interval seconds and ingest what was "
        "added, replaced or deleted, until Ctrl-C",
    )
    p.add_argument(
        "--interval",
        type=number("watch_interval", kind=float),
        help="seconds between scans ($PROMPTLAKE_WATCH_INTERVAL or 300)",
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


def _other_parsers(sub: argparse._SubParsersAction) -> None:
    rs = sub.add_parser("resume", help="rerun the failed and missing shards of a data dir")
    rs.add_argument("--data-dir", help=DATA_DIR_HELP)
    rs.add_argument("--retry-failed", action="store_true", help="re-fetch failed rows too")
    rs.add_argument("--runner", choices=RUNNERS, help="where shard tasks run this time")
    _wait_arg(rs)
    fb = sub.add_parser("feedback", help="refine weak searches and ideas back into the store")
    fb.add_argument("ideas", nargs="*", help="ideas to improve the store for")
    fb.add_argument("--data-dir", help=DATA_DIR_HELP)
    fb.add_argument("--no-searches", action="store_true", help="only the given ideas")
    fb.add_argument(
        "--max-inputs",
        type=number("feedback_max_inputs"),
        help="inputs this run ($PROMPTLAKE_FEEDBACK_MAX_INPUTS or 20)",
    )
    fb.add_argument(
        "-n", type=number("refine_n"), help="variants per input ($PROMPTLAKE_REFINE_N or 3)"
    )
    query_cli.add_llm_flag(fb)
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
        "--watch-interval",
        type=number("watch_interval", kind=float),
        help="seconds between scans ($PROMPTLAKE_WATCH_INTERVAL)",
    )
    st = sub.add_parser("status", help="what a data directory holds, per stage")
    st.add_argument("--data-dir", help=DATA_DIR_HELP)
    st.add_argument("--json", action="store_true", help="print one JSON object")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="promptlake", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"promptlake {_version()}")
    verbose = "show everything on the terminal: Prefect's logs, library warnings, tracebacks"
    parser.add_argument("-v", "--verbose", action="store_true", help=verbose)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _ingest_parser(sub)
    _ingest_images_parser(sub)
    query_cli.add_parsers(sub)
    ui_command.add_parser(sub)
    _other_parsers(sub)
    for p in sub.choices.values():  # -v after the command too (not overriding one before it)
        p.add_argument(
            "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help=verbose
        )
    return parser


HANDLERS = {
    "ingest": commands.cmd_ingest,
    "ingest-images": commands.cmd_ingest,
    "search": query_cli.cmd_search,
    "refine": query_cli.cmd_refine,
    "resume": commands.cmd_resume,
    "serve": commands.cmd_serve,
    "feedback": commands.cmd_feedback,
    "status": commands.cmd_status,
    "ui": ui_command.cmd_ui,
}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``promptlake`` console script."""
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # Prefect's 20 s for its temporary server is too short on a busy 2-core machine
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    if not args.verbose and args.command in ("search", "refine", "status", "ui"):
        terminal.quiet_libraries()  # flow commands keep theirs, in their log
    try:
        code = HANDLERS[args.command](args)
        sys.stdout.flush()  # a reader that is gone shows here, where it is handled
        return code
    except KeyboardInterrupt:
        terminal.say("promptlake: interrupted")
        return runs.INTERRUPTED
    except BrokenPipeError:  # `promptlake status | head`: the reader has what it wanted
        terminal.quiet_broken_pipe()
        return 0
    except Exception as exc:
        if args.verbose:
            raise
        terminal.say(f"promptlake: error: {runs.describe(exc)}")
        return getattr(exc, "exit_code", 2)


if __name__ == "__main__":
    sys.exit(main())
