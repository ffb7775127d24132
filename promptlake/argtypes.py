"""One rule for every number a flag takes: its bounds come from the setting it overrides
(``Settings``), and a value outside them is refused by the parser, before any work or model load,
in the same words for every command."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from annotated_types import Ge, Gt, Le

from promptlake.settings import Settings


def bounds(setting: str) -> tuple[float | None, float | None, bool]:
    """(low, high, low_exclusive) of ``Settings.<setting>``."""
    low: Any = None  # Settings' bounds are numbers, kept as written (1, not 1.0, in messages)
    high: Any = None
    exclusive = False
    for rule in Settings.model_fields[setting].metadata:
        if isinstance(rule, Ge):
            low = rule.ge
        elif isinstance(rule, Gt):
            low, exclusive = rule.gt, True
        elif isinstance(rule, Le):
            high = rule.le
    return low, high, exclusive


def number(
    setting: str | None = None, *, low: float | None = None, kind: type = int
) -> Callable[[str], float]:
    """An argparse ``type``: a ``kind`` within the bounds of ``Settings.<setting>`` (or at least
    ``low``)."""
    lo, hi, exclusive = bounds(setting) if setting else (low, None, False)

    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not {'a whole number' if kind is int else 'a number'}"
            ) from None
        too_low = lo is not None and (value <= lo if exclusive else value < lo)
        if too_low or (hi is not None and value > hi):
            raise argparse.ArgumentTypeError(f"must be {_range(lo, hi, exclusive)}, got {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


def _num(x: float) -> str:
    """A bound as people write it: 1000 and 1,000,000, not 1e+06; 0.5 stays 0.5."""
    if not float(x).is_integer():
        return f"{x:g}"
    return f"{int(x):,}" if abs(x) >= 10_000 else str(int(x))


def _range(lo: float | None, hi: float | None, exclusive: bool) -> str:
    if lo is not None and hi is not None:
        return f"between {_num(lo)} and {_num(hi)}"
    if lo is not None:
        return f"more than {_num(lo)}" if exclusive else f"at least {_num(lo)}"
    assert hi is not None
    return f"at most {_num(hi)}"


class Parser(argparse.ArgumentParser):
    """argparse, its error on one line (with where to find help) instead of usage and error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"promptlake: error: {message} (see `{self.prog} --help`)\n")
