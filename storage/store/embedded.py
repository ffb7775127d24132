"""Opening the embedded chDB engine, and saying why it could not be opened.

chDB reports every failure to start as "Error initializing EmbeddedServer"; the real cause (the
store locked by another process, permission denied, a table this chDB cannot attach) goes only
to the process's stderr. So the open listens to fd 2 and names the cause it finds there.
"""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import os
import re
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from promptlake.storage.store.hits import StoreUnavailable
from promptlake.storage.store.repair import repair, snapshot

ENGINE_LINE = re.compile(r"DB::|^\s*\d+\. |^\s*$")  # the engine's messages and stack frames
_warm = False
SERVER_ADVICE = "serve the store from a ClickHouse server (PROMPTLAKE_STORE_URL=clickhouse://…)"


def open_engine(path: str) -> Any:
    """A clickhouse-connect client on the chDB engine at ``path`` (created if missing)."""
    import clickhouse_connect

    target = Path(path)
    if target.exists() and not target.is_dir():
        raise StoreUnavailable(
            f"the store path {path} is a file, not a directory: point the store "
            "(--data-dir, PROMPTLAKE_STORE_URL=chdb:///dir) at a directory"
        )
    try:
        target.mkdir(parents=True, exist_ok=True)
    except PermissionError as exc:
        raise StoreUnavailable(denied(path, str(exc))) from exc
    if lock_owner(target / "status") is None:  # nobody has it open: mend what a full disk left
        for fixed in repair(target):
            print(f"promptlake: repaired the store {path}: {fixed}", file=sys.stderr, flush=True)
    with _stderr_heard() as heard:
        try:
            client = clickhouse_connect.get_client(interface="chdb", path=path)
        except Exception as exc:
            raise StoreUnavailable(explain(path, heard(), exc)) from exc
    snapshot(target)
    return client


def warm_up() -> None:
    """Start chDB's engine once in this process, on no store, so that its one-time start-up
    (~200 ms quiet, over 1 s on a busy machine) happens before taking a store's turn: opening a
    store afterwards costs ~30-60 ms."""
    global _warm
    if _warm:
        return
    _warm = True
    import clickhouse_connect

    with contextlib.suppress(Exception), _stderr_heard():  # a head start only: the real open
        clickhouse_connect.get_client(interface="chdb", path=":memory:").close()  # says why


def denied(path: str, cause: str) -> str:
    return (
        f"permission denied for the store {path} ({cause}): give user {getpass.getuser()} "
        "write access to it, or use another data dir"
    )


def explain(path: str, said: str, exc: Exception) -> str:
    """Why chDB could not open ``path``, from what the engine said on stderr."""
    lines = [line.strip() for line in said.splitlines() if "DB::" in line]
    cause = (lines[0] if lines else str(exc))[:600]
    holder = lock_owner(Path(path) / "status")
    if holder or "Cannot lock file" in said:
        who = f"pid {holder} ({command_of(holder)})" if holder else "another process"
        return (
            f"the store {path} is held by {who}, which does not take promptlake's turns "
            f"(another chDB program, or an older promptlake): stop it, or {SERVER_ADVICE}"
        )
    if "errno: 13" in said or "Permission denied" in said:
        return denied(path, cause)
    if "Cannot attach table" in said or "UNKNOWN_SETTING" in said:
        import chdb

        return (
            f"chDB {chdb.__version__} (engine {chdb.engine_version}) cannot read the store "
            f"{path}: {cause} — it was written by another chDB version: open it with that "
            "version, or move it aside and load again (`promptlake ingest SOURCE --force`)"
        )
    return f"chDB could not open the store {path}: {cause}"


def lock_owner(path: Path) -> int | None:
    """The pid holding a flock on ``path``, from /proc/locks (Linux); None if none or unknown."""
    try:
        st = path.stat()
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return None  # nobody holds it
    except BlockingIOError:
        pass
    finally:
        os.close(fd)
    want = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    with contextlib.suppress(OSError):
        for line in Path("/proc/locks").read_text().splitlines():
            fields = line.split()
            if "->" not in fields and len(fields) > 5 and fields[5] == want:
                return int(fields[4])
    return None


def command_of(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return "command unknown"
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()[:200]


@contextlib.contextmanager
def _stderr_heard() -> Iterator[Callable[[], str]]:
    """Send fd 2 to a file meanwhile; yield a reader of what was said. Afterwards everything
    but the engine's own lines (which the caller quotes) goes on to the real stderr."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)

        def heard() -> str:
            sys.stderr.flush()
            sink.seek(0)
            return sink.read().decode(errors="replace")

        try:
            yield heard
        finally:
            said = heard()
            os.dup2(saved, 2)
            os.close(saved)
            rest = [line for line in said.splitlines(True) if not ENGINE_LINE.search(line)]
            if rest:
                os.write(2, "".join(rest).encode())
