"""A command's input, checked before any work starts: a mistyped path, a bad value or a data dir
that is not there fails at once with one line saying what to do — no Prefect server started, no
model loaded, nothing written (not even the data dir)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from promptlake.settings import HUB_NAME, Settings
from promptlake.storage.datadir.layout import DataDir

# flags whose name is not the field's (the rest are --field-name)
FLAGS = {
    "clip_model": "--model",
    "fetch_workers": "--workers",
    "search_k": "-k",
    "refine_k": "-k",
    "refine_n": "-n",
    "k": "-k",
    "n": "-n",
    "feedback_max_inputs": "--max-inputs",
}


class InputError(ValueError):
    """The command's input is wrong; found before any work started."""


def params(cls: type[BaseModel], **fields: Any) -> Any:
    """``cls(**fields)`` with its settings resolved, a validation error as one line that names
    the flag or environment variable."""
    try:
        made = cls(**fields)
        made.settings()  # type: ignore[attr-defined]
        return made
    except ValidationError as exc:
        raise InputError(explain(exc)) from None


def settings(**overrides: Any) -> Settings:
    """Settings from the environment and these flags, a bad value as one line."""
    from promptlake.settings import get_settings

    try:
        return get_settings(**overrides)
    except ValidationError as exc:
        raise InputError(explain(exc)) from None


def explain(exc: ValidationError) -> str:
    """A pydantic error as one line per bad value: the flag (or PROMPTLAKE_ variable), the value
    and what is expected."""
    parts = []
    for err in exc.errors():
        name = str(err["loc"][0]) if err["loc"] else "value"
        where = FLAGS.get(name, "--" + name.replace("_", "-"))
        if name in Settings.model_fields:
            where += f" or PROMPTLAKE_{name.upper()}"
        msg = err["msg"]
        if err["type"] == "string_pattern_mismatch":  # a choice: name them, not the regex
            msg = _choices(str(err.get("ctx", {}).get("pattern", ""))) or msg
        parts.append(f"invalid {where} {err.get('input')!r}: {msg}")
    return "; ".join(parts)


def _choices(pattern: str) -> str | None:
    """``^(auto|cpu|cuda(:[0-9]+)?)$`` as "give auto, cpu or cuda[:N]"; None for another kind of
    pattern."""
    inner = re.fullmatch(r"\^\((.*)\)\$", pattern)
    if not inner:
        return None
    words = inner.group(1).replace("(:[0-9]+)?", "[:N]").split("|")
    if any(re.search(r"[^\w:\[\]]", w) for w in words):
        return None
    return "give " + (", ".join(words[:-1]) + " or " + words[-1] if len(words) > 1 else words[0])


def check_source(source: str) -> None:
    """A local SOURCE exists and, when a file, is a readable dataset with the six columns."""
    from promptlake.tasks.source.rows import column_names, has_rows, missing_columns
    from promptlake.tasks.source.sourcefile import detect_format

    if source.startswith("kaggle:") or re.match(r"^https?://", source):
        return  # the download stage resolves these (network)
    path = Path(source).expanduser()
    if path.is_dir():
        return
    if not path.is_file():
        raise InputError(
            f"source not found: {source!r} (give a .csv, .csv.gz or .parquet file, a folder of "
            "images, an http(s) URL or kaggle:owner/dataset)"
        )
    fmt = detect_format(path.name)
    missing = missing_columns(column_names(path, fmt))
    if missing:
        raise InputError(
            f"{path} lacks the column(s) {', '.join(missing)}: a dataset needs id, prompt, url, "
            "width, height, source_site (any order; extra columns are kept)"
        )
    if not has_rows(path, fmt):
        raise InputError(f"{path} has its header but no rows: nothing to ingest")


# words that are never an idea of their own: seen among several IDEAs, the shell split a phrase
_PHRASE_WORDS = frozenset(
    {"a", "an", "the", "of", "on", "in", "at", "to", "and", "with", "for", "by", "from", "into"}
)


def check_ideas(ideas: list[str]) -> None:
    """Several IDEAs of which some are words like "a" or "on": an unquoted phrase the shell
    split into words, refused before each word is written back as an idea of its own."""
    split = list(dict.fromkeys(i for i in ideas if i.strip().lower() in _PHRASE_WORDS))
    if len(ideas) > 1 and split:
        shown = ", ".join(repr(i) for i in split[:3])
        raise InputError(
            f"{len(ideas)} ideas, among them {shown}: each IDEA is one argument, so quote an "
            f"idea of several words, e.g. promptlake feedback {shlex.quote(' '.join(ideas))}"
        )


def check_image(image: str) -> None:
    """An --image that is a local path is a file that opens as an image (a URL is fetched
    later, with the fetch stage's checks)."""
    if re.match(r"^https?://", image):
        return
    path = Path(image).expanduser()
    if not path.is_file():
        raise InputError(f"--image {image}: no such file (give an image file or an http(s) URL)")
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise InputError(
            f"--image {image}: not an image this can read ({type(exc).__name__}); give a PNG, "
            "JPEG or WebP file"
        ) from None


def check_model(name: str) -> None:
    """A local model folder exists and holds a model; a hub name is left to the hub."""
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").exists():
            raise InputError(
                f"--model {name}: the folder has no config.json; give a folder written by "
                "save_pretrained() or a Hugging Face model name"
            )
        return
    if not HUB_NAME.match(name) or path.exists():
        raise InputError(
            f"--model {name}: no such model folder (nor a Hugging Face model name like "
            "openai/clip-vit-base-patch32); set --model or PROMPTLAKE_CLIP_MODEL to a folder "
            "written by save_pretrained()"
        )


def check_not_busy(data_dir: Path, wait: float) -> None:
    """An ingest that would not wait fails at once, before Prefect starts, when another ingest
    holds the data dir (the run itself takes the lock: a race still ends the same way)."""
    from promptlake.storage.datadir.ingest_lock import DataDirBusy, holder

    data = DataDir(data_dir)
    held = holder(data) if wait <= 0 else None
    if held:
        raise DataDirBusy(data, held)


def check_data_dir(data_dir: Path, *, needs: str = "store") -> None:
    """The data dir exists and holds what the command needs: ``store`` (embeddings to search),
    ``ingest`` (a recorded ingest to resume) or ``any``."""
    from promptlake.storage.datadir.vectors import current_namespace

    data = DataDir(data_dir)
    first = f"run `promptlake ingest SOURCE --data-dir {data.root}` first"
    if not data.root.is_dir():
        raise InputError(
            f"no data dir at {data.root}: {first}, or point --data-dir (PROMPTLAKE_DATA_DIR) "
            "at an existing one"
        )
    if needs == "ingest" and not data.ingest_record.exists():
        raise InputError(f"no ingest was started in {data.root}: {first}")
    if needs == "store" and current_namespace(data) is None:
        raise InputError(f"{data.root} holds no embeddings yet (0 rows to search): {first}")


def check_disk(settings: Settings) -> None:
    """The data dir's disk has the floor (``PROMPTLAKE_MIN_FREE_MB``) free: a run on a full
    disk is refused at once, before its log, the Prefect server or any write (DiskFull)."""
    from promptlake.settings import min_free_bytes
    from promptlake.storage.datadir import diskspace

    data = DataDir(settings.data_dir)
    floor = min_free_bytes(settings)
    what = "a run (its log, records and outputs)"
    diskspace.check(data.root, need=0, floor=floor, what=what, data_root=data.root)
