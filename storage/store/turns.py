"""Turns with an embedded chDB store: one process at a time per store, the others wait.

chDB runs one engine per process and flocks its directory (``<store>/status``): a second process
cannot open the store at all, read-only included. promptlake's processes (scheduled and UI-run
flows, the search page, CLI commands) therefore take turns, through files beside the store, in
``<store>.turn/``:

- ``lock``: the turn. Its holder has an exclusive ``flock`` on it; the kernel drops it when the
  holder dies, so a killed process frees its turn at once.
- ``holder.json``: who holds it (pid, command or flow run, unit of work, since when), written
  atomically after taking the lock; believed only while that pid lives and the lock is held.
- ``waiters/<ticket>``: one file per waiting process, flocked by its owner (a dead owner's file
  is removed by whoever sees it). Only the first live ticket may take the lock: first come,
  first served, so a busy search page never starves an ingest, nor the other way round.

Within a process the turn is shared by threads and reentrant (feedback → refine → search →
load nests): a unit of work joins the process's turn. Between units the process keeps the
engine open while nobody waits; a watcher thread sees a waiter within ``WATCH`` seconds and
hands the store over as soon as the units in progress end.

chDB facts behind this (chdb-core 26.9, clickhouse-connect 1.12, the 2-core dev machine):
opening the engine costs ~300 ms the first time in a process, then ~30 ms (empty store) to
~45 ms (100k rows of 512-d vectors); closing ~5 ms. A process can close and reopen a path, or
alternate between two paths, 1,000 times without an error; threads and fds stay flat, resident
memory grows ~65 KB a cycle. "Error initializing EmbeddedServer" comes only when another path is
still open in the process, or the store is locked or unreadable (the engine prints the real
cause on stderr only: see ``embedded``). An open engine holds the flock, ~15 threads and its
caches: the HNSW index is read again on the first search after each open (100k rows: 210 ms
instead of 20 ms). A search that reopened the store each time would cost ~250 ms more: hence
keeping it open until someone waits.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict
from typing import Any, TypeVar

from promptlake.storage.datadir.layout import write_json
from promptlake.storage.store.hits import StoreBusy, StoreError
from promptlake.storage.store.turn_files import Holder, Say, TurnFiles

WATCH = 0.1  # seconds between a holder's looks for waiters


class ProcessTurn:
    """This process's turn with one embedded store: shared by threads, reentrant in a thread.
    ``opener(path)`` opens the engine (a client), which the turn closes when it hands over;
    ``warm_up()`` runs before queueing (one-time costs that need no store). Nesting is per
    thread: a unit that hands store work to another thread and waits for it would, once another
    process waits, wait for its own turn to end (until the bound): keep a unit in one thread."""

    def __init__(
        self, path: str, opener: Callable[[str], Any], warm_up: Callable[[], None]
    ) -> None:
        self.path, self.files, self.opener, self.warm_up = path, TurnFiles(path), opener, warm_up
        self.cond = threading.Condition()
        self.local = threading.local()
        self.client: Any = None
        self.fd: int | None = None
        self.generation = 0  # one per opening of the engine
        self.users = 0  # units of work in progress (outermost ones)
        self.handing_over = False  # someone waits: no new units until the store is handed over
        self.label: tuple[str, str, bool] | None = None
        self.since = 0.0

    @contextlib.contextmanager
    def unit(self, *, who: str, unit: str, wait: float, long: bool = False, say: Say) -> Iterator:
        """Hold the store for one unit of work; yields the engine's client."""
        if getattr(self.local, "depth", 0):  # nested in this thread: already inside the turn
            with self.cond:
                outer = self.label
                if long:
                    self._relabel(who, unit, long)
            self.local.depth += 1
            try:
                yield self.client
            finally:
                self.local.depth -= 1
                if long and outer:
                    with self.cond:
                        self._relabel(*outer)
            return
        self._enter(who, unit, wait, long, say)
        self.local.depth = 1
        try:
            yield self.client
        finally:
            self.local.depth = 0
            self._leave()

    def _join(self, who: str, unit: str, long: bool) -> bool:
        if self.client is None or self.handing_over:
            return False
        self.users += 1
        self._relabel(who, unit, long)
        return True

    def _enter(self, who: str, unit: str, wait: float, long: bool, say: Say) -> None:
        deadline = time.monotonic() + wait
        with self.cond:
            if self._join(who, unit, long):
                return
        # this process must (re)take its turn; one thread at a time queues for it
        if not _GATE.acquire(timeout=max(deadline - time.monotonic(), 0)):
            raise StoreBusy(self.files.busy([], wait))
        try:
            with self.cond:
                while self.client is not None and self.handing_over:
                    if not self.cond.wait(timeout=deadline - time.monotonic()):
                        raise StoreBusy(self.files.busy([], wait))
                if self._join(who, unit, long):
                    return
            _hand_back_others(self, deadline)  # chDB: one engine path per process
            self.warm_up()
            me = Holder(os.getpid(), who, unit, time.time(), long, socket.gethostname())
            fd = self.files.take(me, deadline=deadline, say=say)
            try:
                client = self.opener(self.path)
            except BaseException:
                self.files.release(fd)
                raise
            with self.cond:
                self.client, self.fd, self.users, self.handing_over = client, fd, 1, False
                self.generation += 1
                self.label, self.since = (who, unit, long), me.since
            threading.Thread(
                target=self._watch, args=(self.generation,), name="store-turn", daemon=True
            ).start()
        finally:
            _GATE.release()

    def _leave(self) -> None:
        with self.cond:
            self.users -= 1
            if self.users:
                return
            if self.handing_over or self.files.others_waiting():
                self._release()

    def _relabel(self, who: str, unit: str, long: bool) -> None:
        """Say in holder.json what the turn is used for now (cheap: a rename, no fsync)."""
        if self.label == (who, unit, long) or self.fd is None:
            return
        self.label = (who, unit, long)
        me = Holder(os.getpid(), who, unit, self.since, long, socket.gethostname())
        with contextlib.suppress(OSError):  # a full disk: the note stays as it was
            write_json(self.files.info, asdict(me), durable=False)

    def _release(self) -> None:
        """Close the engine and free the turn (the caller holds ``cond``)."""
        client, fd = self.client, self.fd
        self.client, self.fd, self.handing_over, self.label = None, None, False, None
        try:
            client.close()
        finally:
            if fd is not None:
                self.files.release(fd)
            self.cond.notify_all()

    def _watch(self, generation: int) -> None:
        """While this process holds the turn: when another waits, hand over after the units in
        progress (the last one out releases) or at once when idle; when idle, say so."""
        while True:
            time.sleep(WATCH)
            with self.cond:
                if self.generation != generation or self.client is None:
                    return
                if self.handing_over:
                    continue
                if self.users == 0 and self.label and self.label[1]:  # kept open, idle: say so
                    self._relabel(self.label[0], "", False)
            if self.files.others_waiting():
                self.hand_back()

    def hand_back(self, deadline: float | None = None) -> None:
        """Give the store back: at once when idle, else after the units in progress (waiting
        for them until ``deadline``, monotonic, when one is given)."""
        with self.cond:
            if self.client is None:
                return
            if getattr(self.local, "depth", 0):
                raise StoreError(
                    f"this thread is inside a unit of work on {self.path}: one process can "
                    "use one embedded store at a time"
                )
            self.handing_over = True
            if self.users == 0:
                self._release()
            while deadline is not None and self.client is not None:
                if not self.cond.wait(timeout=deadline - time.monotonic()):
                    raise StoreBusy(f"this process's own work on {self.path} did not end in time")

    def forget(self) -> None:
        """In a forked child: drop the parent's turn without touching its lock or engine."""
        if self.fd is not None:
            os.close(self.fd)  # no LOCK_UN: that would free the parent's lock too
        _LEFT_IN_PARENT.append(self.client)  # never closed here: the parent's engine
        self.client, self.fd, self.users, self.handing_over = None, None, 0, False
        self.cond, self.local = threading.Condition(), threading.local()


_GATE = threading.Lock()  # chDB has one engine per process: one thread at a time takes it
_TURNS: dict[str, ProcessTurn] = {}
_TURNS_LOCK = threading.Lock()
_LEFT_IN_PARENT: list[Any] = []


def process_turn(
    path: str, opener: Callable[[str], Any], warm_up: Callable[[], None]
) -> ProcessTurn:
    """This process's turn for the store at ``path`` (a resolved directory path)."""
    with _TURNS_LOCK:
        if path not in _TURNS:
            _TURNS[path] = ProcessTurn(path, opener, warm_up)
        return _TURNS[path]


def _hand_back_others(mine: ProcessTurn, deadline: float) -> None:
    for other in list(_TURNS.values()):
        if other is not mine:
            other.hand_back(deadline)


def _release_all() -> None:
    """At exit: close the engine cleanly (the kernel would drop the locks anyway)."""
    for turn in list(_TURNS.values()):
        if turn.cond.acquire(timeout=1):
            try:
                if turn.client is not None:
                    turn._release()
            finally:
                turn.cond.release()


def _forget_all() -> None:
    global _GATE, _TURNS_LOCK
    _GATE, _TURNS_LOCK = threading.Lock(), threading.Lock()
    for turn in _TURNS.values():
        turn.forget()


atexit.register(_release_all)
os.register_at_fork(after_in_child=_forget_all)


F = TypeVar("F", bound=Callable[..., Any])


def in_turn(method: F) -> F:
    """A store method run inside the store's turn (joining the caller's when it holds one)."""

    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        with self.turn(method.__name__):
            return method(self, *args, **kwargs)

    return wrapper  # type: ignore[return-value]
