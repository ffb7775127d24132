"""Mending what chDB leaves behind when the disk fills, before the store is opened.

chDB (26.9) writes a table's metadata file as ``<table>.sql.tmp``, ignores the ENOSPC of that
write and renames the empty file into place: the store then never opens again ("Cannot attach
table … Empty query"). A DDL on a nearly full disk does it to ``<table>.sql`` (and to the
database's ``.sql``, and to ``format_version.txt`` of a new table); a DELETE at 0 KB leaves an
empty ``mutation_N.txt``. No promptlake command issues DDL on a full disk any more (see
``storage.datadir.diskspace``), but a store damaged before, or by another process, is mended
here, keeping every part (the rows):

- a table's ``.sql`` ← the copy kept in ``<store>.turn/schema/`` after its last change (taken
  after every open and every DDL, only when it changed), when that copy names the same table
  UUID: the table exactly as it was (an older store's sort key, its index); without a copy,
  the table as this version makes it (``storage.store.schema``; the index stage declares the
  index again), the vector dimension read from a sibling table; a damaged table that holds no
  part yet (made on the full disk) is removed instead and the schema step makes it again;
- the database's ``.sql`` ← ``ATTACH DATABASE _ UUID '<uuid>' ENGINE = Atomic`` (the UUID is
  the target of its relative symlink, as chDB made it);
- an empty ``format_version.txt`` ← ``1``; an empty ``mutation_N.txt`` (a mutation that never
  ran; the load that sent it has no marker) is moved out.

Whatever is replaced is kept in ``<store>.turn/repaired/<time>/``, outside the store (chDB
refuses to open a metadata folder holding unknown files).
"""

from __future__ import annotations

import contextlib
import re
import shutil
import time
from pathlib import Path

from promptlake.storage.datadir.layout import atomic_path
from promptlake.storage.store import schema
from promptlake.storage.store.hits import StoreUnavailable


def _healthy(sql: Path) -> bool:
    try:
        with open(sql, "rb") as fh:
            return fh.read(6) == b"ATTACH"
    except OSError:
        return False


def _uuid(link: Path) -> str | None:
    """The UUID a chDB symlink (``../store/abc/<uuid>``) points to."""
    return Path(str(link.readlink())).name if link.is_symlink() else None


def _dim(*folders: Path) -> int | None:
    """The vector dimension a sibling table's metadata (or its kept copy) states."""
    for folder in folders:
        for sql in sorted(folder.glob("*.sql")) if folder.is_dir() else []:
            found = re.search(r"CHECK length\(\w+\) = (\d+)", sql.read_text(errors="replace"))
            if found:
                return int(found[1])
    return None


def _databases(store: Path) -> list[Path]:
    meta = store / "metadata"
    return sorted(p for p in meta.iterdir() if p.is_symlink()) if meta.is_dir() else []


def _kept(store: Path) -> Path:
    return Path(f"{store}.turn") / "schema"


def snapshot(store: Path) -> None:
    """Keep a copy of each healthy table metadata file that changed since the last copy (a few
    small files compared: well under a millisecond). Best effort: a full disk skips it."""
    with contextlib.suppress(OSError):
        for db in _databases(store):
            for sql in db.glob("*.sql"):
                copy = _kept(store) / db.name / sql.name
                body = sql.read_bytes()
                if body.startswith(b"ATTACH") and (not copy.exists() or copy.read_bytes() != body):
                    with atomic_path(copy) as tmp:
                        tmp.write_bytes(body)


class _Mender:
    def __init__(self, store: Path) -> None:
        self.store = store
        self.aside = Path(f"{store}.turn") / "repaired" / time.strftime("%Y%m%d-%H%M%S")
        self.done: list[str] = []
        self.stuck: list[str] = []

    def keep(self, path: Path) -> None:
        """Move ``path`` out of the store, into the repaired folder."""
        target = self.aside / path.relative_to(self.store)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(path), target)

    def write(self, path: Path, body: str, why: str) -> None:
        """Replace ``path``'s content (a copy of the old one goes to the repaired folder)."""
        target = self.aside / path.relative_to(self.store)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
        with atomic_path(path) as tmp:
            tmp.write_text(body)
        self.done.append(f"{path.relative_to(self.store)} ({why})")

    def database(self, db: Path) -> None:
        sql = db.with_suffix(".sql")
        uuid = _uuid(db)
        if sql.exists() and not _healthy(sql) and uuid:
            self.write(sql, f"ATTACH DATABASE _ UUID '{uuid}'\nENGINE = Atomic\n", "rebuilt")

    def table(self, db: Path, sql: Path) -> None:
        if _healthy(sql):
            return
        data = self.store / "data" / db.name / sql.stem
        uuid, copy = _uuid(data), _kept(self.store) / db.name / sql.name
        kept = copy.read_text() if copy.exists() else ""
        if uuid and f"UUID '{uuid}'" in kept:
            self.write(sql, kept, "restored from its copy in the .turn folder")
            return
        folder = data.resolve() if data.is_symlink() else None
        held = folder.iterdir() if folder else iter(())
        parts = [p for p in held if p.is_dir() and p.name != "detached"]
        made = (
            schema.attach_sql(sql.stem, uuid, _dim(db, _kept(self.store) / db.name))
            if uuid
            else None
        )
        if parts and made:  # no copy: as this version makes the table (its index comes again)
            self.write(sql, made, "rebuilt from the schema promptlake makes")
            return
        if parts:
            self.stuck.append(str(sql))
            return
        self.keep(sql)  # nothing in it yet: gone, the schema step makes it again
        if folder and folder.exists():
            self.keep(folder)
        data.unlink(missing_ok=True)
        self.done.append(f"{sql.relative_to(self.store)} (an empty new table, removed)")

    def table_files(self, folder: Path) -> None:
        version = folder / "format_version.txt"
        if version.exists() and version.stat().st_size == 0:
            self.write(version, "1", "rebuilt")
        for mutation in folder.glob("mutation_*.txt"):
            if mutation.stat().st_size == 0:
                self.keep(mutation)
                self.done.append(f"{mutation.relative_to(self.store)} (empty, set aside)")


def repair(store: Path) -> list[str]:
    """Mend the damage a full disk left in the store at ``store`` (not open by anyone);
    returns what was mended. StoreUnavailable when a damaged table holds rows and no copy of
    its metadata was kept."""
    mend = _Mender(store)
    for db in _databases(store):
        mend.database(db)
        if db.is_dir():
            for sql in sorted(db.glob("*.sql")):
                mend.table(db, sql)
    tables = store / "store"
    for folder in sorted(tables.glob("*/*")) if tables.is_dir() else []:
        if folder.is_dir():
            mend.table_files(folder)
    if mend.stuck:
        raise StoreUnavailable(
            f"the store {store} has damaged table metadata ({', '.join(mend.stuck)}: left empty "
            "by chDB on a full disk) and no copy of it was kept: restore that file from a "
            "backup, or move the store aside and load again (`promptlake ingest SOURCE --force`)"
        )
    return mend.done
