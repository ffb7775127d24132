"""The store's turn as the stages take it. One place says who this process is (its Prefect
flow run, or its command line), how long it waits (``Settings.store_wait_for``: flows wait
longer than commands a person waits for) and where its waiting lines go (the run's log, or
stderr)."""

from __future__ import annotations

import contextlib
import functools
import sys
from collections.abc import Iterator

from promptlake.settings import Settings, min_free_bytes, store_url
from promptlake.storage.store import Store, open_store
from promptlake.storage.store.turn_files import command_line, say_on_stderr


@contextlib.contextmanager
def store_turn(settings: Settings, unit: str, *, long: bool = False) -> Iterator[Store]:
    """Hold the configured store for one unit of work (``unit`` names it for those waiting;
    ``long``: it may take minutes). Load models and read files before, not inside."""
    store = open_store(store_url(settings))
    store.min_free = min_free_bytes(settings)  # the floor every write leaves on its disk
    with store.turn(
        unit,
        who=who(),
        wait=settings.store_wait_for(interactive=_flow_run_id() is None),
        long=long,
        say=say,
    ):
        yield store


def who() -> str:
    """This process as others waiting for it see it: its flow run, or its command line."""
    run_id = _flow_run_id()
    return _run_name(run_id) if run_id else command_line()


def _flow_run_id() -> str | None:
    """This process's flow run, if any. A process that never imported Prefect (a CLI search or
    refine: it calls tasks.query, never a flow) runs no flow, and does not pay for importing it
    here."""
    if "prefect" not in sys.modules:
        return None
    from prefect.runtime import flow_run

    return flow_run.get_id()


@functools.lru_cache(maxsize=64)
def _run_name(run_id: str) -> str:
    """``flow run 'name' (flow)``; outside a flow's own context this asks the API, once."""
    from prefect.runtime import flow_run

    try:
        return f"flow run {flow_run.get_name()!r} ({flow_run.get_flow_name()})"
    except Exception:  # the API is unreachable: the id still says which run
        return f"flow run {run_id}"


def say(line: str) -> None:
    """A waiting line: into the flow run's log, or on stderr outside a flow."""
    if "prefect" not in sys.modules:
        say_on_stderr(line)
        return
    from prefect import get_run_logger
    from prefect.exceptions import MissingContextError

    try:
        get_run_logger().warning(line)
    except MissingContextError:
        say_on_stderr(line)
