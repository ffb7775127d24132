"""What guards the store's writes: the free-space check before them, a full disk's error turned
into :class:`DiskFull`, DELETEs that never wait forever (``storage.store.mutations``), and the
copy of the schema's metadata files that ``storage.store.repair`` mends a store from. A base of
``Store``: it uses the store's client, database and turn."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from promptlake.storage.datadir import diskspace
from promptlake.storage.store import mutations, repair
from promptlake.storage.store.dialects import ClickHouseDialect
from promptlake.storage.store.turns import ProcessTurn


class WriteGuards:
    """The write guards of a store (see the module docstring)."""

    db: str
    dialect: ClickHouseDialect
    _turn: ProcessTurn | None
    # bytes every write leaves free on an embedded store's disk (the caller's setting)
    min_free: int = 0

    @property
    def client(self) -> Any:
        raise NotImplementedError

    def table(self, name: str) -> str:
        raise NotImplementedError

    def _database_exists(self) -> bool:
        found = self.client.query(
            "SELECT count() FROM system.databases WHERE name = {db:String}",
            parameters={"db": self.db},
        )
        return bool(found.result_rows[0][0])

    @contextlib.contextmanager
    def _writing(self, *, need: int, what: str) -> Iterator[None]:
        """Around a write: first the free-space check (an embedded store: ``need`` bytes plus
        ``min_free``), then a full disk's error inside turned into DiskFull."""
        if self._turn is None:  # a server says NOT_ENOUGH_SPACE itself
            yield
            return
        path = self._turn.path
        if need:
            diskspace.check(path, need=need, floor=self.min_free, what=what)
        with diskspace.translated(path, what=what):
            yield

    def _snapshot(self) -> None:
        """Keep a copy of the schema's metadata files (``storage.store.repair``)."""
        if self._turn is not None:
            repair.snapshot(Path(self._turn.path))

    def _delete(self, name: str, where: str, params: dict[str, Any], what: str) -> None:
        self.client.command(
            f"DELETE FROM {self.table(name)} WHERE {where}",
            parameters=params,
            settings=self.dialect.async_delete,
        )
        self._wait_for_mutations(name, what)

    def _wait_for_mutations(self, name: str, what: str) -> None:
        if not self.dialect.async_delete:
            return  # this dialect's DELETE returned when done
        need = max(2 * self._parts(name)[0], diskspace.MB)

        def room() -> str | None:
            if self._turn is None:
                return None
            free = diskspace.free_bytes(self._turn.path)
            if free >= need:
                return None
            return diskspace.message(
                Path(self._turn.path), free=free, need=need, what=what, data_root=None
            )

        mutations.wait_for(self.client, self.db, name, room=room, what=what)

    def _parts(self, name: str) -> tuple[int, int]:
        """Bytes of table ``name``'s largest active part (what a mutation rewrites) and of all
        of them (what a merge into one rewrites)."""
        found = self.client.query(
            "SELECT max(bytes_on_disk), sum(bytes_on_disk) FROM system.parts "
            "WHERE database = {db:String} AND table = {table:String} AND active",
            parameters={"db": self.db, "table": name},
        ).result_rows
        return (int(found[0][0] or 0), int(found[0][1] or 0)) if found else (0, 0)
