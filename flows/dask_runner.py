"""Shard tasks on a Dask cluster (``--runner dask``): a local one, or one at an address."""

from __future__ import annotations

import contextlib
import os
import signal
from typing import Any

from prefect_dask import DaskTaskRunner

from promptlake.tasks.runtime import stop


class DaskRunner(DaskTaskRunner):
    """A local cluster starts on the first submit: its processes inherit the SIGINT block, so
    the terminal's Ctrl-C reaches only the flow's process, which closes the cluster."""

    def submit(self, task: Any, parameters: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        with stop.sigint_blocked():
            return super().submit(task, parameters, *args, **kwargs)

    def __exit__(self, exc_type: Any, *rest: Any) -> None:
        if exc_type is not None and issubclass(exc_type, KeyboardInterrupt):
            self._end_local_workers()  # closing the cluster would wait for their tasks
        super().__exit__(exc_type, *rest)

    def _end_local_workers(self) -> None:
        """Kill the worker processes of the local cluster this runner started (a remote one's
        tasks are the cluster's: closing the client releases them)."""
        if self.address or self._cluster is None:
            return
        for nanny in list(getattr(self._cluster, "workers", {}).values()):
            pid = getattr(nanny, "pid", None)
            if pid:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)


def dask_runner(workers: int, address: str | None) -> DaskRunner:
    """The cluster at ``address``, or a local one of ``workers`` single-threaded processes."""
    if address:
        return DaskRunner(address=address)
    return DaskRunner(
        cluster_kwargs={"n_workers": workers, "threads_per_worker": 1, "dashboard_address": None}
    )
