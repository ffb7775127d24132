"""What the tests share that is not a test: loopback servers (images, faults, LLM and A1111
APIs, the search page), CLI processes, store holders, tiny models and metadata files."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the repository
DATA = ROOT / "tests" / "data"
