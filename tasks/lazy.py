"""Prefect task wrappers built on first use.

A CLI search or refine calls the plain functions of ``tasks.search`` and ``tasks.refine`` and
never needs Prefect, whose import is about a second of a cold search. Those modules declare
their task wrappers here instead of with ``@task``: ``from promptlake.tasks.search import
search_task`` (what a flow does) builds the Prefect task then, once, and keeps it in the module,
where pickling finds it like any other module attribute.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any


def prefect_tasks(module: str, **specs: tuple[Callable, dict[str, Any]]) -> Callable[[str], Any]:
    """A module ``__getattr__`` (PEP 562) that makes ``name`` = ``task(**options)(fn)`` for each
    ``name=(fn, options)`` of ``specs`` when it is first looked up."""

    def __getattr__(name: str) -> Any:
        if name not in specs:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        from prefect import task

        fn, options = specs[name]
        built = task(**options)(fn)
        setattr(sys.modules[module], name, built)
        return built

    return __getattr__
