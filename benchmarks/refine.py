"""Refine cost against the search it is built on, on an existing data dir (default: the demo's).

Prints p50/p95 of: a search (k neighbours), an offline refine (the same search + phrase ranking +
token counting), and an `openai` refine against a loopback chat server that answers at once (the
client's own overhead). Run `make demo` first, then `make bench-refine`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from promptlake.sample_data import SUBJECTS
from promptlake.settings import get_settings
from promptlake.storage.datadir.layout import DataDir
from promptlake.tasks.query.refine import RefineRequest, refine
from promptlake.tasks.query.search import SearchRequest, query_settings, search
from tests.helpers.api_servers import ChatServer


def timed(fn, ideas: list[str]) -> list[float]:
    out = []
    for idea in ideas:
        start = time.perf_counter()
        fn(idea)
        out.append((time.perf_counter() - start) * 1000)
    return out


def row(name: str, ms: list[float], base: float) -> None:
    p50, p95 = statistics.median(ms), sorted(ms)[int(len(ms) * 0.95) - 1]
    print(f"{name:28} p50 {p50:7.1f} ms  p95 {p95:7.1f} ms  ({p50 / base:.2f}x search)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-dir", default="demo/data")
    parser.add_argument("-k", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    s = query_settings(get_settings(data_dir=args.data_dir))
    data = DataDir(s.data_dir)
    ideas = [f"{subject}, quiet mood" for subject in SUBJECTS] * args.rounds
    search(SearchRequest(text="warm up", log=False), data, s)  # model load, store open
    base = timed(lambda i: search(SearchRequest(text=i, k=args.k, log=False), data, s), ideas)
    offline = timed(
        lambda i: refine(RefineRequest(idea=i, k=args.k, llm="offline", log=False), data, s),
        ideas,
    )
    with ChatServer() as chat:
        llm = s.model_copy(update={"llm_base_url": chat.base_url, "llm_model": "loopback"})
        chat_ms = timed(
            lambda i: refine(RefineRequest(idea=i, k=args.k, llm="openai", log=False), data, llm),
            ideas,
        )
    b = statistics.median(base)
    print(f"{len(ideas)} ideas, k={args.k}, model {s.clip_model}")
    row("search", base, b)
    row("refine offline", offline, b)
    row("refine openai (loopback)", chat_ms, b)
    return 0


if __name__ == "__main__":
    sys.exit(main())
