"""Run shard tasks through a chain of stages with a concurrency cap per stage, and show progress
in the terminal (tqdm) and the Prefect UI (progress and table artifacts)."""

from __future__ import annotations

import os
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from prefect.exceptions import TerminationSignal
from prefect.futures import PrefectFuture
from prefect.task_runners import ProcessPoolTaskRunner, TaskRunner, ThreadPoolTaskRunner
from tqdm.auto import tqdm

from promptlake import terminal
from promptlake.flows.progress import Progress, StageResult
from promptlake.flows.runlog import quiet_completions, shard_done, shard_failed
from promptlake.storage.datadir.records import ShardStats
from promptlake.tasks.runtime import stop


@dataclass
class Stage:
    """One stage of the chain: its task, how many shards it may run at once, its arguments."""

    task: Any
    limit: int
    kwargs: dict[str, Any]
    runner: TaskRunner | None = None  # a stage that must stay in the flow's process


# a stop: Ctrl-C, or SIGTERM (docker stop, systemd, a Prefect cancel) as Prefect raises it
STOPPING = (KeyboardInterrupt, TerminationSignal)


def _interrupted(exc_type: type[BaseException] | None) -> bool:
    return exc_type is not None and issubclass(exc_type, STOPPING)


class ThreadRunner(ThreadPoolTaskRunner):
    """Shard tasks in threads of this process. Left by a Ctrl-C it does not wait for them: they
    see the stop request (``tasks.runtime.stop``) at their next batch and end."""

    def __exit__(self, exc_type: Any, exc_value: Any, traceback: Any) -> None:
        if _interrupted(exc_type) and self._executor is not None:
            stop.request()
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
        super().__exit__(exc_type, exc_value, traceback)


class ProcessRunner(ProcessPoolTaskRunner):
    """Shard tasks in worker processes that ignore the terminal's Ctrl-C (it reaches the whole
    process group). Left by one, it ends its workers at once instead of waiting for their
    shards: what they wrote is whole (outputs first, markers last), the rest runs next time."""

    def __init__(self, max_workers: int | None = None) -> None:
        super().__init__(max_workers=max_workers, initializer=_init_worker, initargs=(os.getpid(),))

    def submit(self, task: Any, parameters: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        with stop.sigint_blocked():  # its helper threads, and the workers they start, inherit it
            return super().submit(task, parameters, *args, **kwargs)

    def __exit__(self, exc_type: Any, exc_value: Any, traceback: Any) -> None:
        if _interrupted(exc_type) and self._executor is not None:
            end_processes(list(self._executor._processes.values()))
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
        super().__exit__(exc_type, exc_value, traceback)


def _init_worker(parent: int) -> None:
    stop.ignore_interrupts()
    quiet_completions()
    _end_with(parent)


def _end_with(parent: int) -> None:
    """End this worker soon after the flow's process ``parent`` is gone (killed by SIGKILL, say;
    maybe before this worker even started): the data dir's lock died with it, and the next
    ingest must not meet this worker's writes."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="end-with-flow", daemon=True).start()


def end_processes(procs: list[Any], grace: float = 2.0) -> None:
    """Terminate ``procs`` (multiprocessing processes), and kill those still there after
    ``grace`` seconds."""
    for p in procs:
        p.terminate()
    for p in procs:
        p.join(grace)
        if p.is_alive():
            p.kill()
            p.join(1.0)


def make_runner(kind: str, workers: int, address: str | None = None) -> TaskRunner:
    """The task runner for shard tasks: threads of this process, worker processes (each with
    its own GIL, HTTP pool, LMDB handle and model), or a Dask cluster (local or at ``address``).
    Each stops within seconds on Ctrl-C."""
    if kind == "thread":
        return ThreadRunner(max_workers=workers)
    if kind == "process":
        return ProcessRunner(max_workers=workers)
    if kind == "dask":
        from promptlake.flows.dask_runner import dask_runner

        return dask_runner(workers, address)
    raise ValueError(f"unknown runner {kind!r}: use thread, process or dask")


def result_of(fut: PrefectFuture) -> Any:
    """``fut.result()``, waiting in short steps: a Ctrl-C is handled only when the main thread
    runs, and a wait without a timeout may not wake up for it."""
    done = threading.Event()
    fut.add_done_callback(lambda _: done.set())
    while not done.wait(1.0):
        pass
    return fut.result()


def run_pipeline(
    stages: list[Stage],
    todo: dict[str, int],
    *,
    total: int,
    runner: TaskRunner | None,
    progress: bool,
) -> list[StageResult]:
    """Run each shard of ``todo`` (of ``total`` planned) through ``stages`` in order on
    ``runner`` (entered by the caller; None when ``todo`` is empty), from the stage index
    ``todo`` gives it on. A shard enters a stage as soon as it left the previous one, so fetch
    runs ahead of embed; a shard that failed a stage goes no further."""
    passing = [sum(1 for entry in todo.values() if entry <= i) for i in range(len(stages))]
    results = [
        StageResult(st.task.name, already=total - n) for st, n in zip(stages, passing, strict=True)
    ]
    if not todo:
        return results
    assert runner is not None
    quiet_completions()
    queues = [deque(s for s, entry in todo.items() if entry == i) for i in range(len(stages))]
    running: dict[PrefectFuture, tuple[int, str]] = {}
    bars = [
        tqdm(
            total=n,
            desc=r.stage,
            unit="shard",
            disable=not progress,
            position=i,
            file=terminal.stream(),
        )
        for i, (r, n) in enumerate(zip(results, passing, strict=True))
    ]
    arts = [Progress(r.stage, n) if n else None for r, n in zip(results, passing, strict=True)]
    done_q: queue.Queue[PrefectFuture] = queue.Queue()
    try:
        while any(queues) or running:
            for i in reversed(range(len(stages))):  # downstream first: finish shards early
                busy = sum(1 for s, _ in running.values() if s == i)
                while queues[i] and busy < stages[i].limit:
                    shard = queues[i].popleft()
                    on = stages[i].runner or runner
                    fut = on.submit(stages[i].task, {"shard": shard, **stages[i].kwargs})
                    running[fut], busy = (i, shard), busy + 1
                    # not prefect.futures.wait(timeout=…): in the main thread its timeout is a
                    # SIGALRM that can strike inside threading's locks ("release unlocked lock")
                    fut.add_done_callback(done_q.put)
            for ended in _finished(done_q):
                i, shard = running.pop(ended)
                if _collect(ended, shard, results[i]) and i + 1 < len(stages):
                    queues[i + 1].append(shard)
                bars[i].update()
                if art := arts[i]:
                    art.show(len(results[i].done) + len(results[i].failed))
    except STOPPING:  # Ctrl-C or SIGTERM: submit nothing more; leaving, the runner ends the rest
        stop.request()
        raise
    finally:
        for bar in bars:
            bar.close()
    return results


def _finished(finished: queue.Queue[PrefectFuture]) -> list[PrefectFuture]:
    """At least one finished future (waiting in short steps, so signals get through), plus any
    others that finished meanwhile."""
    while True:
        try:
            done = [finished.get(timeout=1.0)]
            break
        except queue.Empty:
            continue
    while not finished.empty():
        done.append(finished.get_nowait())
    return done


def _collect(fut: PrefectFuture, shard: str, result: StageResult) -> bool:
    try:
        result.done[shard] = fut.result()
    except Exception as exc:  # the task failed after its retries: the shard is failed
        result.failed[shard] = f"{type(exc).__name__}: {exc}"[:500]
        shard_failed(result.stage, shard, result.failed[shard])
        return False
    if isinstance(result.done[shard], ShardStats):
        shard_done(result.done[shard])
    return True
