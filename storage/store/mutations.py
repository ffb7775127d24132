"""Mutations (a shard's DELETE, an index's MATERIALIZE) that never wait forever.

A synchronous mutation waits inside the engine until it is done — and ClickHouse never
schedules one that has no disk space to reserve (no error, no fail reason: chDB 26.9 waited
over 90 s at 0–64 KB free, holding the store). So mutations are sent asynchronously and waited
for here, in short polls: one that failed, has no room on the disk, or makes no progress for
``STALL`` seconds is killed (``KILL MUTATION``: instant, the rows stay as they were) and its
caller gets an error. A killed DELETE may have masked some of the shard's rows; the load that
sent it writes no marker, so its rerun deletes and inserts the shard again.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from promptlake.storage.datadir.diskspace import DiskFull
from promptlake.storage.store.hits import StoreError

STALL = 300.0  # seconds without progress before a mutation is given up
NO_ROOM_AFTER = 1.0  # seconds a mutation may sit unscheduled while the disk lacks room
PENDING = (
    "SELECT mutation_id, parts_to_do, latest_fail_reason FROM system.mutations "
    "WHERE database = {db:String} AND table = {table:String} AND NOT is_done"
)


def wait_for(
    client: Any,
    db: str,
    table: str,
    *,
    room: Callable[[], str | None],
    what: str,
    stall: float = STALL,
) -> None:
    """Wait until the mutations of ``db.table`` are done. ``room()`` says why the disk has no
    room for them (a :class:`DiskFull` message), or None. Raises DiskFull or StoreError after
    killing them when they cannot finish."""
    where = {"db": db, "table": table}
    seen: tuple = ()
    changed = time.monotonic()
    delay = 0.02
    while True:
        rows = client.query(PENDING, parameters=where).result_rows
        if not rows:
            return
        now, progress = time.monotonic(), tuple((mid, todo) for mid, todo, _ in rows)
        if progress != seen:
            seen, changed = progress, now
        failed = next((why for *_, why in rows if why), "")
        no_room = room() if now - changed >= NO_ROOM_AFTER else None
        if failed or no_room or now - changed >= stall:
            kill(client, where, [mid for mid, *_ in rows])
            if no_room:
                raise DiskFull(no_room)
            why = failed or f"no progress in {stall:.0f} s"
            raise StoreError(f"{what} did not finish in the store ({why}); it was cancelled")
        time.sleep(delay)
        delay = min(delay * 2, 0.5)


def kill(client: Any, where: dict[str, str], ids: list[str]) -> None:
    """Cancel the named mutations of a table."""
    client.command(
        "KILL MUTATION WHERE database = {db:String} AND table = {table:String} "
        "AND has({ids:Array(String)}, mutation_id)",
        parameters={**where, "ids": ids},
    )
