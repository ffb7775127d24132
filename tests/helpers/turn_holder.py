"""A process that takes a store's turn for tests:
``python -m tests.helpers.turn_holder URL [options]``.

Prints ``held`` once it holds the turn (after loading a real shard with ``--load``, as an
ingest would), holds it ``--hold`` seconds or, with ``--hold -1``, until a line arrives on
stdin, prints ``released``, then stays alive, idle, ``--idle`` seconds."""

from __future__ import annotations

import argparse
import sys
import time

from promptlake.storage.store import open_store


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("--unit", default="test hold")
    ap.add_argument("--who", default="tests.helpers.turn_holder")
    ap.add_argument("--hold", type=float, default=60.0)
    ap.add_argument("--idle", type=float, default=0.0)
    ap.add_argument("--wait", type=float, default=300.0)
    ap.add_argument("--long", action="store_true")
    ap.add_argument("--note", help="append --who to this file while holding the turn")
    ap.add_argument("--load", nargs=2, metavar=("DATA_DIR", "SHARD"), help="load a shard")
    args = ap.parse_args()
    store = open_store(args.url)
    with store.turn(args.unit, who=args.who, wait=args.wait, long=args.long):
        if args.load:
            from promptlake.settings import Settings
            from promptlake.storage.datadir.layout import DataDir
            from promptlake.tasks import load

            data = DataDir(args.load[0])
            load.run_shard(args.load[1], data, Settings(data_dir=data.root), force=True)
        assert store.client.query("SELECT 1").result_rows == [(1,)]  # the engine is open
        if args.note:
            with open(args.note, "a") as fh:
                fh.write(args.who + "\n")
        print("held", flush=True)
        if args.hold < 0:
            sys.stdin.readline()
        else:
            time.sleep(args.hold)
    print("released", flush=True)
    time.sleep(args.idle)


if __name__ == "__main__":
    main()
