"""What the person at the terminal sees: progress bars, a short summary and one error line.
Everything else a run prints — Prefect's logs, worker processes, library warnings, tracebacks —
goes to the run's log file (file descriptors 1 and 2 point there while it runs, so processes
started meanwhile write there too), unless ``-v`` asked for all of it on the terminal."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

_terminal: TextIO | None = None  # the terminal while fds 1 and 2 point to a log file
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\ufffd]+")


def stream() -> TextIO:
    """Where progress bars and messages for the person go: the terminal, even while a run's
    output is redirected to its log."""
    return _terminal or sys.stderr


def say(line: str) -> None:
    """One line for the person at the terminal."""
    out = stream()
    out.write(printable(line) + "\n")
    out.flush()


def printable(text: str, limit: int = 2000) -> str:
    """``text`` without control characters or undecodable bytes (a binary file's content in an
    error message must not reach the terminal), on one line, at most ``limit`` characters."""
    one = _CONTROL.sub(" ", text.replace("\n", " ").replace("\r", " "))
    one = re.sub(r" {2,}", " ", one).strip()
    return one if len(one) <= limit else one[: limit - 1] + "…"


def shorten(text: str, width: int) -> str:
    """``text`` on one line, cut to ``width`` characters with "…" when it is longer."""
    one = " ".join(text.split())
    return one if len(one) <= width else one[: width - 1].rstrip() + "…"


def quiet_broken_pipe() -> None:
    """The reader of stdout is gone (``promptlake status | head``): send what is left to
    /dev/null, so that the exit does not complain about it."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


@contextlib.contextmanager
def output_to(log: Path) -> Iterator[None]:
    """Point file descriptors 1 and 2 at ``log`` (appending) meanwhile; :func:`stream` stays the
    terminal. Child processes started meanwhile inherit the log as their stdout and stderr."""
    global _terminal
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    _terminal = io.TextIOWrapper(
        io.FileIO(os.dup(saved[1]), "w"), encoding="utf-8", errors="replace", line_buffering=True
    )
    try:
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for n in (fd, *saved):
            os.close(n)
        _terminal.close()
        _terminal = None


def quiet_libraries() -> None:
    """No model-loading bars or library warnings on the terminal (``-v`` keeps them): what
    transformers, huggingface_hub and torch say on a normal run is not for the person."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore")
    for name in ("transformers", "huggingface_hub", "torch", "chdb", "urllib3"):
        logging.getLogger(name).setLevel(logging.ERROR)
    if "transformers" in sys.modules:  # already imported: its settings are read at import
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
