"""HTTP (and opt-in file://) downloads with timeouts, size limits, per-host caps and retries."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

import requests
from requests.adapters import HTTPAdapter

from promptlake.settings import Settings
from promptlake.tasks.backoff import backoff_delay, retry_after_seconds

RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})
_HOST_SLOTS: dict[tuple[str, int], threading.BoundedSemaphore] = {}
_HOST_LOCK = threading.Lock()


@dataclass
class Download:
    """A finished download: ``status`` is ``ok`` (with ``body``) or the failure kind."""

    status: str
    body: bytes = b""
    http_status: int | None = None
    error: str = ""
    attempts: int = 0
    retry_in: float | None = None


class _Failure(Exception):
    def __init__(
        self,
        status: str,
        error: str,
        http_status: int | None = None,
        retry: bool = False,
        wait: float | None = None,
    ) -> None:
        super().__init__(error)
        self.status, self.error, self.http_status = status, error, http_status
        self.retry, self.wait = retry, wait


def _host_slot(host: str, cap: int) -> threading.BoundedSemaphore:
    """One semaphore per host per process, so concurrent shards share the cap."""
    with _HOST_LOCK:
        return _HOST_SLOTS.setdefault((host, cap), threading.BoundedSemaphore(cap))


class Fetcher:
    """Downloads URLs over one pooled session; safe to call from many threads."""

    def __init__(self, settings: Settings, pool_size: int | None = None) -> None:
        self.s = settings
        self.session = requests.Session()
        self.session.max_redirects = settings.max_redirects
        self.session.headers["User-Agent"] = settings.user_agent
        size = pool_size or settings.fetch_workers
        adapter = HTTPAdapter(pool_connections=size, pool_maxsize=size, max_retries=0)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)

    def close(self) -> None:
        self.session.close()

    def attempt(self, url: str, attempt: int = 1) -> Download:
        """One try at ``url``. A failure that may pass (timeout, dropped connection, 429, 5xx)
        carries ``retry_in``: the caller schedules the next try instead of sleeping on a worker."""
        try:
            parts = urlparse(url)
            host = parts.hostname
        except ValueError as exc:
            return Download("invalid_url", error=f"{exc}: {url[:200]!r}", attempts=1)
        if parts.scheme == "file":
            return self._read_file(parts.path)
        if parts.scheme not in ("http", "https") or not host:
            return Download("invalid_url", error=f"unsupported URL {url[:200]!r}", attempts=1)
        try:
            with _host_slot(host, self.s.fetch_per_host):
                body, code = self._attempt(url)
            return Download("ok", body, code, attempts=attempt)
        except _Failure as f:
            retry_in = (
                backoff_delay(
                    attempt, base=self.s.backoff_base, most=self.s.backoff_max, retry_after=f.wait
                )
                if f.retry
                else None
            )
            return Download(f.status, b"", f.http_status, f.error, attempt, retry_in)

    def _attempt(self, url: str) -> tuple[bytes, int]:
        timeout = (self.s.connect_timeout, self.s.read_timeout)
        try:
            with self.session.get(url, stream=True, timeout=timeout) as resp:
                self._check_status(resp)
                try:
                    return self._read_body(resp), resp.status_code
                except _Failure as f:
                    f.http_status = resp.status_code
                    raise
        except requests.TooManyRedirects as exc:
            raise _Failure("too_many_redirects", str(exc)[:300]) from exc
        except requests.Timeout as exc:
            raise _Failure("timeout", f"timed out: {exc}"[:300], retry=True) from exc
        except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as exc:
            raise _Failure("connection_error", str(exc)[:300], retry=True) from exc
        except (
            requests.exceptions.InvalidURL,
            requests.exceptions.MissingSchema,
            requests.exceptions.InvalidSchema,
        ) as exc:
            raise _Failure("invalid_url", f"{type(exc).__name__}: {exc}"[:300]) from exc
        except requests.RequestException as exc:  # bad headers, content decoding, ...
            raise _Failure("http_error", f"{type(exc).__name__}: {exc}"[:300]) from exc
        except (UnicodeError, ValueError) as exc:  # e.g. a host name IDNA cannot encode
            raise _Failure("invalid_url", f"{type(exc).__name__}: {exc}"[:300]) from exc

    def _check_status(self, resp: requests.Response) -> None:
        code = resp.status_code
        if code < 400:
            return
        if code in (404, 410):
            raise _Failure("http_404", f"HTTP {code}", code)
        wait = retry_after_seconds(resp.headers.get("Retry-After"))
        raise _Failure(
            "http_error",
            f"HTTP {code} {resp.reason}",
            code,
            retry=code in RETRYABLE_STATUS,
            wait=wait,
        )

    def _read_body(self, resp: requests.Response) -> bytes:
        limit = self.s.max_body_bytes
        length = resp.headers.get("Content-Length")
        if length and length.isdigit() and int(length) > limit:
            raise _Failure("too_large", f"Content-Length {length} exceeds {limit} bytes")
        deadline = time.monotonic() + self.s.fetch_deadline
        chunks, total = [], 0
        for chunk in resp.iter_content(1 << 16):
            total += len(chunk)
            if total > limit:
                raise _Failure("too_large", f"body exceeds {limit} bytes")
            if time.monotonic() > deadline:
                raise _Failure(
                    "timeout", f"body not received in {self.s.fetch_deadline}s", retry=True
                )
            chunks.append(chunk)
        return b"".join(chunks)

    def _read_file(self, path: str) -> Download:
        if not self.s.allow_file_urls:
            return Download(
                "invalid_url",
                error="file:// URLs are disabled; set "
                "PROMPTLAKE_ALLOW_FILE_URLS=1 for a dataset you trust",
                attempts=1,
            )
        local = Path(unquote(path))
        try:
            size = local.stat().st_size
            if size > self.s.max_body_bytes:
                return Download("too_large", error=f"{size} bytes exceeds the limit", attempts=1)
            return Download("ok", local.read_bytes(), attempts=1)
        except FileNotFoundError:
            return Download("not_found", error=f"no such file {str(local)[:200]}", attempts=1)
        except OSError as exc:
            return Download("read_error", error=str(exc)[:300], attempts=1)
