"""download: resolve SOURCE (a local file, a folder of generated images, an http(s) URL or
``kaggle:owner/dataset``) to a local file."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from urllib.parse import urlparse

import requests
from prefect import task
from prefect.states import State

from promptlake.storage.datadir.layout import DataDir, read_json, write_json
from promptlake.storage.datadir.records import REQUIRED_COLUMNS, SourceInfo
from promptlake.tasks.net.backoff import TRANSIENT_STATUSES
from promptlake.tasks.source.remote import fetch_http
from promptlake.tasks.source.rows import column_names, missing_columns
from promptlake.tasks.source.sourcefile import FORMATS, DownloadError, detect_format

__all__ = ["FORMATS", "DownloadError", "detect_format", "download", "download_task"]

KAGGLE_HANDLE = re.compile(r"[^/\s]+/[^/\s]+(/versions/[0-9]+)?")
KAGGLE_HELP = (
    "Kaggle needs network access and, for most datasets, credentials: set KAGGLE_USERNAME and "
    "KAGGLE_KEY (or write ~/.kaggle/kaggle.json). Offline, download the CSV elsewhere and pass "
    "its path as SOURCE instead, or pre-fill KAGGLEHUB_CACHE and name the version "
    "(kaggle:<owner>/<dataset>/versions/<n>)."
)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def download(source: str, data: DataDir, *, timeout: float = 30.0) -> SourceInfo:
    """Resolve ``source`` to a local file, record its size and sha256, and return where it is."""
    source = str(source).strip()
    if not source:
        raise DownloadError("SOURCE is empty: give a path, an http(s) URL or kaggle:owner/dataset")
    if source.startswith("kaggle:"):
        path = _from_kaggle(source.removeprefix("kaggle:"))
    elif urlparse(source).scheme in ("http", "https"):
        path = _from_http(source, data, timeout=timeout)
    elif Path(source).expanduser().is_dir():
        path = _from_directory(Path(source).expanduser(), data)
    else:
        path = Path(source).expanduser()
        if not path.is_file():
            raise DownloadError(f"source file not found: {source!r}")
    path = path.resolve()
    info = _describe(source, path, data)
    write_json(data.source_info, {**info.__dict__, "mtime": path.stat().st_mtime})
    return info


def _describe(source: str, path: Path, data: DataDir) -> SourceInfo:
    """Size and hash of ``path``, reusing the recorded hash when the file did not change."""
    stat = path.stat()
    old = read_json(data.source_info) if data.source_info.exists() else {}
    if (old.get("path"), old.get("size"), old.get("mtime")) == (
        str(path),
        stat.st_size,
        stat.st_mtime,
    ):
        return SourceInfo(source, str(path), stat.st_size, old["sha256"], old["fmt"])
    size = stat.st_size
    return SourceInfo(source, str(path), size, sha256_file(path), detect_format(path.name))


def _from_http(url: str, data: DataDir, *, timeout: float) -> Path:
    """``url`` streamed to ``source/<name>``, checked again on every run (a conditional GET) and
    resumed only when the server promises the same version (``tasks/source/remote.py``)."""
    name = Path(urlparse(url).path).name or "dataset.csv"
    detect_format(name)
    return fetch_http(url, data.source_dir / name, timeout=timeout)


def _from_directory(folder: Path, data: DataDir) -> Path:
    """A folder of generated images: a parquet dataset of their metadata prompts."""
    from promptlake.tasks.source.image_folder import scan_directory

    target = data.scanned_images
    try:
        scan_directory(folder, target)
    except FileNotFoundError as exc:
        raise DownloadError(str(exc)) from exc
    return target


def _from_kaggle(handle: str) -> Path:
    """Download a Kaggle dataset through kagglehub and pick its data file. A versioned handle
    already in kagglehub's cache (``KAGGLEHUB_CACHE``) resolves without the network."""
    if not KAGGLE_HANDLE.fullmatch(handle):
        raise DownloadError(
            f"bad Kaggle handle {handle!r}: expected kaggle:<owner>/<dataset> or "
            "kaggle:<owner>/<dataset>/versions/<n>"
        )
    try:
        import kagglehub

        folder = Path(kagglehub.dataset_download(handle))
    except Exception as exc:
        raise _kaggle_error(handle, exc) from exc
    return pick_data_file(folder, f"kaggle:{handle}")


def _kaggle_error(handle: str, exc: Exception) -> DownloadError:
    """Why kagglehub failed, and whether trying again can help: the network and the server's
    own trouble (timeouts, 408, 429, 5xx) can pass; refused credentials, a dataset that does not
    exist (or is not shared with you) and a bad credentials file cannot."""
    from kagglehub.exceptions import CredentialError, DataCorruptionError, UnauthenticatedError

    response = getattr(exc, "response", None) if isinstance(exc, requests.HTTPError) else None
    status = getattr(response, "status_code", None)
    if status in (401, 403) or isinstance(exc, CredentialError | UnauthenticatedError):
        return DownloadError(
            f"Kaggle refused kaggle:{handle} ({status or type(exc).__name__}): check "
            f"KAGGLE_USERNAME and KAGGLE_KEY (or ~/.kaggle/kaggle.json), and accept the dataset's "
            f"terms on kaggle.com if it asks for consent. Kaggle said: {exc}"
        )
    if status == 404:
        return DownloadError(
            f"kaggle:{handle} was not found on Kaggle (404): check the owner, dataset name and "
            f"version; a private dataset needs credentials that may read it. Kaggle said: {exc}"
        )
    transient = (
        isinstance(exc, requests.ConnectionError | requests.Timeout | DataCorruptionError)
        or status in TRANSIENT_STATUSES
    )
    return DownloadError(
        f"could not download kaggle:{handle}: {exc}. {KAGGLE_HELP}", transient=transient
    )


def pick_data_file(folder: Path, label: str) -> Path:
    """The dataset file under ``folder``: of its .csv, .csv.gz and .parquet files, those whose
    header has every required column, the largest first. An error lists them when none fits."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and _is_data_file(p.name))
    if not files:
        raise DownloadError(f"{label} holds no .csv, .csv.gz or .parquet file")
    unfit = {p: _unfit(p) for p in files}
    fits = [p for p in files if unfit[p] is None]
    if fits:
        return max(fits, key=lambda p: p.stat().st_size)
    listed = "; ".join(f"{p.relative_to(folder)}: {why}" for p, why in unfit.items())
    raise DownloadError(
        f"{label} has no file with the columns {', '.join(REQUIRED_COLUMNS)} — {listed}. "
        "Pass the path of a file that has them as SOURCE."
    )


def _unfit(path: Path) -> str | None:
    """Why ``path`` cannot be the dataset (its header lacks columns, or does not read)."""
    try:
        missing = missing_columns(column_names(path, detect_format(path.name)))
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        return f"unreadable header ({str(exc)[:120]})"
    return f"lacks {', '.join(missing)}" if missing else None


def _is_data_file(name: str) -> bool:
    try:
        detect_format(name)
        return True
    except DownloadError:
        return False


def _worth_retrying(task: object, task_run: object, state: State) -> bool:
    try:
        state.result()
    except DownloadError as exc:
        return exc.transient
    except Exception:
        return True
    return True


@task(name="download", retries=2, retry_delay_seconds=10, retry_condition_fn=_worth_retrying)
def download_task(source: str, data_dir: str) -> SourceInfo:
    """Prefect task: resolve the source; network failures are retried."""
    return download(source, DataDir(data_dir))
