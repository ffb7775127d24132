"""Named crash points, for the crash tests only: every write of the data dir and the store calls
``reached(point)`` the moment the write has landed (a file renamed into place, a cache commit,
a store statement, a removal). Unless the test-only environment variables below are set this
does nothing but two dictionary look-ups.

- ``PROMPTLAKE_TEST_CRASH_AT``: an ``fnmatch`` pattern of point names, optionally ``#n`` (the
  n-th point that matches, counted in this process; default the first); several, comma-separated,
  act each at its own moment (useful with ``pause``);
- ``PROMPTLAKE_TEST_CRASH_ACTION``: ``kill`` (default: SIGKILL to this process's whole group,
  the command and every process it started, as a crash takes them) or ``pause:<dir>`` (create
  a file in ``<dir>`` named after the point and wait until the test deletes it);
- ``PROMPTLAKE_TEST_CRASH_ROOT``: the data dir; files are named by their path relative to it
  (``plan/manifest.json``), and files outside it are not points;
- ``PROMPTLAKE_TEST_TRACE``: a file that gets one line per point reached (what the coverage
  test compares with its list of kill points).

Point names: ``<relative path>`` (a file written), ``rm:<relative path>`` (removed),
``cache:put`` / ``cache:delete`` (an image cache commit), ``store:<table>:<op>`` (a store
statement that changed rows: ``delete``, ``insert``, ``drop``, ``optimize``, ``index``).
These are deliberately not ``Settings``: nobody sets them but a test.
"""

from __future__ import annotations

import fnmatch
import os
import re
import signal
import threading
import time
from pathlib import Path

AT, ACTION, ROOT, TRACE = (
    "PROMPTLAKE_TEST_CRASH_AT",
    "PROMPTLAKE_TEST_CRASH_ACTION",
    "PROMPTLAKE_TEST_CRASH_ROOT",
    "PROMPTLAKE_TEST_TRACE",
)
_LOCK = threading.Lock()
_SEEN: dict[str, int] = {}  # pattern -> matches so far in this process
PAUSE_LIMIT = 900.0  # seconds a paused writer waits for the test before going on


def reached(point: str) -> None:
    """The write named ``point`` has landed: trace it, and crash or pause here when asked."""
    at, trace = os.environ.get(AT), os.environ.get(TRACE)
    if not at and not trace:
        return
    if trace:
        with open(trace, "a") as fh:  # one short line per write: O_APPEND keeps lines whole
            fh.write(point + "\n")
    due = [_due(spec, point) for spec in at.split(",")] if at else []  # every spec counts
    if any(due):
        _act(point, os.environ.get(ACTION, "kill"))


def file_written(path: str | os.PathLike[str]) -> None:
    """``path`` was renamed into place (or first written)."""
    if (name := relative(path)) is not None:
        reached(name)


def removed(path: str | os.PathLike[str]) -> None:
    """``path`` (a file or a folder) was removed."""
    if (name := relative(path)) is not None:
        reached(f"rm:{name}")


def relative(path: str | os.PathLike[str]) -> str | None:
    """``path`` relative to the crash root, or None (no root set, or a path outside it)."""
    root = os.environ.get(ROOT)
    if not root or not (os.environ.get(AT) or os.environ.get(TRACE)):
        return None
    rel = os.path.relpath(os.path.abspath(path), os.path.realpath(root))
    return None if rel.startswith("..") else rel


def pattern_of(point: str) -> str:
    """A point's name with every run of digits as ``N`` (shard names, generations)."""
    return re.sub(r"[0-9]+", "N", point)


def _due(spec: str, point: str) -> bool:
    pattern, _, nth = spec.partition("#")
    if not fnmatch.fnmatchcase(point, pattern):
        return False
    with _LOCK:
        _SEEN[spec] = _SEEN.get(spec, 0) + 1
        return _SEEN[spec] == int(nth or 1)


def _act(point: str, action: str) -> None:
    if action.startswith("pause:"):
        folder = Path(action.removeprefix("pause:"))
        flag = folder / re.sub(r"[^A-Za-z0-9._-]+", "_", point)
        flag.write_text(str(os.getpid()))
        deadline = time.monotonic() + PAUSE_LIMIT
        while flag.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        return
    os.killpg(os.getpgrp(), signal.SIGKILL)
    time.sleep(60)  # the signal is on its way: write nothing more meanwhile
