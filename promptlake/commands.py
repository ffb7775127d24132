"""The commands that run flows (``ingest``, ``ingest-images``, ``resume``, ``feedback``), and
``serve`` and ``status``: input checked first, then the flow run for the terminal."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys

from promptlake import preflight, runs


def cmd_ingest(args: argparse.Namespace) -> int:
    from promptlake.flows.params import IngestParams

    params = preflight.params(
        IngestParams,
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
        wait=_wait(args),
        progress=sys.stderr.isatty(),
    )
    preflight.check_source(params.source)
    settings = params.settings()
    preflight.check_disk(settings)
    if params.runs("embed"):
        preflight.check_model(args.model or settings.clip_model)  # named as the user typed it
    if not getattr(args, "watch", False):  # a watch skips busy rounds instead
        preflight.check_not_busy(settings.data_dir, settings.ingest_wait_for(interactive=True))

    def body() -> int:
        from promptlake.flows.ingest import ingest

        if getattr(args, "watch", False):
            return runs.watch(params, args.interval)
        ingest(**params.flow_kwargs())
        return 0

    again = _command_line(args) if getattr(args, "watch", False) else None  # the watch goes on
    stopped = runs.ingest_stopped(settings.data_dir, again)
    return _flow_command(args, settings.data_dir, body, stopped)


def cmd_resume(args: argparse.Namespace) -> int:
    from promptlake.flows.params import ResumeParams

    params = preflight.params(
        ResumeParams,
        data_dir=args.data_dir,
        retry_failed=args.retry_failed,
        runner=args.runner,
        wait=_wait(args),
        progress=sys.stderr.isatty(),
    )
    settings = params.settings()
    data_dir = settings.data_dir
    preflight.check_data_dir(data_dir, needs="ingest")
    preflight.check_disk(settings)
    preflight.check_not_busy(data_dir, settings.ingest_wait_for(interactive=True))

    def body() -> int:
        from promptlake.flows.ingest import resume

        resume(**params.flow_kwargs())
        return 0

    return _flow_command(args, data_dir, body, runs.ingest_stopped(data_dir))


def _wait(args: argparse.Namespace) -> float | None:
    """--wait, else PROMPTLAKE_INGEST_WAIT, else 0: at the terminal an ingest says at once who
    holds its data dir (a flow run started from Prefect waits 10 min by default)."""
    if args.wait is not None:
        return args.wait
    return preflight.settings().ingest_wait_for(interactive=True)


def _flow_command(args: argparse.Namespace, data_dir, body, stopped) -> int:
    """Run a flow command for the terminal, then show the data dir's status (on success)."""
    code = runs.run_for_terminal(
        body, data_dir=data_dir, command=args.command, verbose=args.verbose, stopped=stopped
    )
    if code == 0:
        return cmd_status(argparse.Namespace(data_dir=str(data_dir), json=False))
    return code


def cmd_feedback(args: argparse.Namespace) -> int:
    from promptlake.flows.params import FeedbackParams

    preflight.check_ideas(args.ideas)
    params = preflight.params(
        FeedbackParams,
        data_dir=args.data_dir,
        ideas=args.ideas,
        use_searches=not args.no_searches,
        max_inputs=args.max_inputs,
        n=args.n,
        llm=args.llm,
        generate=args.generate,
    )
    data_dir = params.settings().data_dir
    preflight.check_data_dir(data_dir, needs="store")
    done: list = []

    def body() -> int:
        from promptlake.flows.feedback import feedback_flow

        done.extend(feedback_flow(**params.flow_kwargs()))
        return 0

    stopped = runs.feedback_stopped(data_dir, _command_line(args))
    code = runs.run_for_terminal(
        body, data_dir=data_dir, command="feedback", verbose=args.verbose, stopped=stopped
    )
    for st in done:
        print(f"{st.extra['input']}  ({st.extra['trigger']}, {st.extra['refiner']})")
        for rid, prompt in zip(st.extra["ids"], st.extra.get("prompts", []), strict=False):
            print(f"  + {rid}  {prompt}")
    if code == 0:
        print(f"feedback: {len(done)} inputs, {sum(st.rows for st in done)} prompts written back")
    return code


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
    from promptlake.settings import store_url
    from promptlake.storage.datadir.layout import DataDir
    from promptlake.storage.datadir.status import format_status, status

    settings = preflight.settings(data_dir=args.data_dir)
    preflight.check_data_dir(settings.data_dir, needs="any")
    report = status(DataDir(settings.data_dir), store_url(settings))
    print(json.dumps(report, indent=2) if args.json else format_status(report))
    return 0


def _command_line(args: argparse.Namespace) -> str:
    return shlex.join(["promptlake", *args.argv])
