"""Runs in progress on a data dir, for ``status``: each run holds an exclusive lock on its own
note (``state/running/<pid>-<n>.json``) for as long as it runs. The kernel frees the lock when
the process ends, even by SIGKILL, so a note nobody holds is stale and is ignored (and swept)."""

from __future__ import annotations

import fcntl
import itertools
import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from promptlake.storage.datadir.layout import DataDir

_SEQ = itertools.count()


def _dir(data: DataDir) -> Path:
    return data.root / "state" / "running"


@contextmanager
def running(data: DataDir, what: str, **extra: object) -> Iterator[None]:
    """Note that ``what`` (e.g. ``ingest data/p.csv``) runs on ``data`` meanwhile; ``extra``
    fields go into the note (the search page: ``kind="page"`` and its ``url``)."""
    folder = _dir(data)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{os.getpid()}-{next(_SEQ)}.json"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        note = {"pid": os.getpid(), "host": socket.gethostname(), "what": what, **extra}
        os.write(fd, json.dumps({**note, "since": time.time()}).encode())
        yield
    finally:
        path.unlink(missing_ok=True)
        os.close(fd)


def now(data: DataDir) -> list[dict]:
    """The runs in progress on ``data``, oldest first (stale notes are removed)."""
    folder, found = _dir(data), []
    for path in sorted(folder.glob("*.json")) if folder.exists() else []:
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            continue  # ended meanwhile
        try:
            text = path.read_text()
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:  # held: the run is alive
            found.append(json.loads(text or "{}"))
        else:  # written (a run writes after locking) and nobody holds it: the run is gone
            if text:
                path.unlink(missing_ok=True)
        finally:
            os.close(fd)
    return sorted((n for n in found if n), key=lambda n: n.get("since", 0))
