"""A stop request for this process (the first Ctrl-C): work running in threads checks it between
units (a batch of fetched rows, a batch of images) and ends; worker processes never see it, they
ignore the terminal's SIGINT and are ended by the process that started them."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

_REQUESTED = threading.Event()


class Stopped(KeyboardInterrupt):
    """Work that noticed a stop request ends like a Ctrl-C: no retry, nothing half-written
    (outputs appear whole, markers after them), so the shard simply runs again next time."""


def request() -> None:
    """Ask every unit of work in this process to stop at its next check."""
    _REQUESTED.set()


def requested() -> bool:
    return _REQUESTED.is_set()


def clear() -> None:
    """Forget a stop request (a new run in the same process)."""
    _REQUESTED.clear()


def check() -> None:
    """Raise :class:`Stopped` when a stop was requested."""
    if _REQUESTED.is_set():
        raise Stopped("stopped on request (Ctrl-C)")


@contextlib.contextmanager
def sigint_blocked() -> Iterator[None]:
    """Block SIGINT in this thread meanwhile. Threads and processes started inside inherit the
    mask, so the terminal's Ctrl-C (sent to the whole process group) cannot reach them before
    they ignore it themselves (:func:`ignore_interrupts`); a SIGINT arriving meanwhile waits and
    is handled once the block ends."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def ignore_interrupts() -> None:
    """For worker processes: the terminal's Ctrl-C is the parent's to handle; the parent ends
    its workers itself (a KeyboardInterrupt here would end a task half-way, with a traceback)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
