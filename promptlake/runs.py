"""Running flows for the person at the terminal: the run's full log in a file under the data dir,
a temporary Prefect server when none is configured, and a Ctrl-C that stops everything within
seconds — one line saying what finished and how to resume, exit status 130. SIGTERM (what
``docker stop``, systemd and Prefect's cancellation send) stops the same way, exit status 143."""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType

from promptlake import terminal
from promptlake.tasks.runtime import stop

TEMPORARY_SERVER_ENV = "PROMPTLAKE_PREFECT_SERVER_TEMPORARY"
INTERRUPTED = 130  # the shell's code for "ended by SIGINT"
TERMINATED = 143  # … and for "ended by SIGTERM"
STOPS = {signal.SIGINT: ("Ctrl-C", INTERRUPTED), signal.SIGTERM: ("SIGTERM", TERMINATED)}
STOP_DEADLINE = 7.0  # seconds from the first Ctrl-C to the end, however the clean-up goes
CHILD_GRACE = 2.0  # seconds a child process gets between SIGTERM and SIGKILL


def new_log(data_dir: Path, command: str) -> Path:
    """``<data_dir>/logs/<command>-<timestamp>.log``, its folder made."""
    folder = Path(data_dir).expanduser().resolve() / "logs"
    folder.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path, n = folder / f"{command}-{stamp}.log", 1
    while path.exists():
        n += 1
        path = folder / f"{command}-{stamp}-{n}.log"
    return path


def run_for_terminal(
    body: Callable[[], int],
    *,
    data_dir: Path,
    command: str,
    verbose: bool,
    stopped: Callable[[Path | None, str], str],
) -> int:
    """Run ``body`` (which runs flows) with a Prefect API, its output in a log file (unless
    ``verbose``) and Ctrl-C and SIGTERM handled. An error becomes one line naming the log; a
    stop ends the process with ``stopped(log, how)``'s line, whatever threads are still winding
    down."""
    stop.clear()
    log = None if verbose else new_log(data_dir, command)
    guard = Interrupts(lambda how: stopped(log, how))
    try:
        with contextlib.ExitStack() as stack:
            if log:
                stack.enter_context(terminal.output_to(log))
            guard.install()
            stack.enter_context(prefect_api())
            code = body()
        guard.uninstall()
        return code
    except KeyboardInterrupt:
        guard.end(graceful=True)
        raise  # not reached: end() leaves the process
    except Exception as exc:
        guard.uninstall()
        if verbose:
            raise
        terminal.say(f"promptlake: error: {describe(exc)}" + (f" (full log: {log})" if log else ""))
        return getattr(exc, "exit_code", 2)


def describe(exc: BaseException) -> str:
    """An exception as the person should read it: our own errors by their message, others with
    their type (they are unexpected)."""
    text = terminal.printable(str(exc))
    if type(exc).__module__.startswith("promptlake") or isinstance(
        exc, (ValueError, FileNotFoundError)
    ):
        return text or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class Interrupts:
    """SIGINT or SIGTERM during a run. The first: a stop request for work in threads, a
    KeyboardInterrupt in the main thread (the flow unwinds, its runner ends the workers, the
    temporary server stops) and a deadline after which the process ends regardless. The second:
    the end, at once. Inside a flow Prefect answers SIGTERM first (TerminationSignal: the
    runners in flows/shards.py stop as for a Ctrl-C), then sends it again to this handler."""

    def __init__(self, line: Callable[[str], str]) -> None:
        self._line = line
        self._first: float | None = None
        self._how, self._code = STOPS[signal.SIGINT]
        self._ending = threading.Lock()
        self._previous: dict[int, object] = {}

    def install(self) -> None:
        if threading.current_thread() is threading.main_thread():
            for signum in STOPS:
                self._previous[signum] = signal.signal(signum, self._on_signal)

    def uninstall(self) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)  # type: ignore[arg-type]
        self._previous = {}

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self._first is not None:
            self.end(graceful=False)
        self._first = time.monotonic()
        self._how, self._code = STOPS[signal.Signals(signum)]
        stop.request()
        timer = threading.Timer(STOP_DEADLINE, self.end, kwargs={"graceful": False})
        timer.daemon = True
        timer.start()
        raise KeyboardInterrupt

    def end(self, *, graceful: bool) -> None:
        """End the child processes, say the one line, and leave with status 130 or 143 (without
        waiting for threads: a fetch in flight or a store call ends with the process, and what
        they had not finished has no marker, so it runs again next time)."""
        if not self._ending.acquire(blocking=False):
            while True:  # another thread is ending the process
                time.sleep(1)
        end_children(CHILD_GRACE if graceful else 0.0)
        try:
            line = self._line(self._how)
        except Exception:  # the data dir could not be read: the stop itself still is news
            line = f"promptlake: stopped ({self._how}); rerun the same command to carry on"
        with contextlib.suppress(Exception):
            terminal.say(line)
            sys.stdout.flush()
        os._exit(self._code)


def end_children(grace: float) -> None:
    """Terminate this process's descendants (SIGKILL after ``grace`` seconds, or at once). The
    multiprocessing resource tracker is left to end with us: it ignores signals and cleans up
    the semaphores of the worker pools when this process is gone."""
    import psutil

    try:
        kids = [
            p
            for p in psutil.Process().children(recursive=True)
            if "resource_tracker" not in " ".join(p.cmdline())
        ]
    except psutil.Error:
        return
    for p in kids:
        with contextlib.suppress(psutil.Error):
            p.send_signal(signal.SIGTERM if grace > 0 else signal.SIGKILL)
    _, alive = psutil.wait_procs(kids, timeout=max(grace, 0.5))
    for p in alive:
        with contextlib.suppress(psutil.Error):
            p.kill()


@contextlib.contextmanager
def prefect_api() -> Iterator[None]:
    """Use the configured Prefect API (environment, profile); without one, start one temporary
    Prefect server and export its URL, so that shard tasks in worker processes report to the
    flow's server instead of starting their own. The temporary server ignores the terminal's
    Ctrl-C (the run stops it after the flow has recorded how it ended) and shows no UI links."""
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL, temporary_settings

    configured = PREFECT_API_URL.value()  # the environment, a Prefect profile or a test harness
    if configured:
        set_here = "PREFECT_API_URL" not in os.environ
        os.environ.setdefault("PREFECT_API_URL", configured)  # for worker processes
        try:
            yield
        finally:
            if set_here:
                del os.environ["PREFECT_API_URL"]
        return

    server = SubprocessASGIServer()
    with stop.sigint_blocked():  # the server process inherits the block: Ctrl-C is ours
        server.start()
    # for worker processes too; TEMPORARY_SERVER_ENV: it cannot free slots of killed runs (embed)
    exported = {"PREFECT_API_URL": server.api_url, TEMPORARY_SERVER_ENV: "1", "PREFECT_UI_URL": ""}
    before = {name: os.environ.get(name) for name in exported}
    os.environ.update(exported)
    try:
        with temporary_settings({PREFECT_API_URL: server.api_url, PREFECT_UI_URL: ""}):
            yield
    finally:
        from prefect.logging.handlers import APILogHandler

        APILogHandler().flush()  # send the run's last log lines before the server goes
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        server.stop()


def watch(params, interval: float | None) -> int:
    """Ingest a folder again and again, every ``interval`` seconds, until Ctrl-C: what was added,
    replaced or deleted since the last round reaches the store. A round that finds the data dir
    held by another ingest is skipped."""
    from promptlake.flows.ingest import ingest
    from promptlake.flows.report import IngestSummary, NoValidRows, ShardsFailed
    from promptlake.storage.datadir.ingest_lock import DataDirBusy

    every = interval or params.settings().watch_interval
    seen = 0
    while True:
        try:
            summary = ingest(**params.flow_kwargs())
            plan = summary.plan if isinstance(summary, IngestSummary) else None
            new = plan.generations[seen:] if plan else []
            seen = len(plan.generations) if plan else seen
            terminal.say(f"watch: {params.source}: " + _round(new))
        except DataDirBusy as busy:
            terminal.say(
                f"watch: round skipped, held by {busy.holder.describe()}; next in {every:g} s"
            )
        except (ShardsFailed, NoValidRows) as exc:  # a broken or empty folder: keep watching
            terminal.say(f"watch: {describe(exc)}")
        deadline = time.monotonic() + every
        while time.monotonic() < deadline:  # short sleeps: Ctrl-C is handled between them
            time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))


def _round(generations: list) -> str:
    if not generations:
        return "no change"
    g = generations[-1]
    return f"+{g.added} added, {g.changed} changed, -{g.removed} removed"


def ingest_stopped(data_dir: Path, again: str | None = None) -> Callable[[Path | None, str], str]:
    """The line an ingest (or resume, or watch) says when Ctrl-C (or SIGTERM: ``how``) stopped
    it: the shards each stage finished, and the command that carries on (``again``, or
    ``promptlake resume``)."""

    def line(log: Path | None, how: str) -> str:
        from promptlake.storage.datadir.layout import DataDir
        from promptlake.storage.datadir.status import progress_line, status

        data = DataDir(data_dir)
        done = progress_line(status(data)) if data.root.exists() else "nothing done yet"
        if again is None and data.ingest_record.exists():
            rerun = shlex.join(["promptlake", "resume", "--data-dir", str(data.root)])
        else:
            rerun = again or "the same command"
        return f"promptlake: stopped ({how}); {done}; resume with: {rerun}" + _log_note(log)

    return line


def feedback_stopped(data_dir: Path, command: str) -> Callable[[Path | None, str], str]:
    """The line a feedback run says when Ctrl-C stopped it: the inputs it wrote back, and that
    the same command does the rest (inputs done are skipped)."""
    from promptlake.storage.datadir.layout import DataDir
    from promptlake.storage.datadir.markers import Markers

    markers = Markers(DataDir(data_dir), "feedback")
    before = len(markers.all_done())

    def line(log: Path | None, how: str) -> str:
        n = len(markers.all_done()) - before
        return (
            f"promptlake: stopped ({how}); {n} feedback input{'s' * (n != 1)} written back; "
            f"the rest with: {command}" + _log_note(log)
        )

    return line


def _log_note(log: Path | None) -> str:
    return f" (log: {log})" if log else ""
