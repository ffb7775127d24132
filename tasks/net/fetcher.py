"""HTTP (and opt-in file://) downloads with timeouts, size limits, per-host caps and breakers, and
retries via the one backoff rule. urllib3 directly: a third of requests' CPU per image."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

import urllib3
from urllib3.exceptions import (
    ConnectTimeoutError,
    DecodeError,
    HTTPError,
    LocationValueError,
    MaxRetryError,
    NameResolutionError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
    ResponseError,
    SSLError,
)

from promptlake.settings import Settings
from promptlake.tasks.net.backoff import TRANSIENT_STATUSES, backoff_delay, retry_after_seconds
from promptlake.tasks.net.hosts import breaker, host_key
from promptlake.tasks.source.rows import url_problem

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
    """A failed try; ``unreachable``: no reply at all (what a host breaker counts)."""

    def __init__(
        self,
        status: str,
        error: str,
        http_status: int | None = None,
        *,
        retry: bool = False,
        wait: float | None = None,
        unreachable: bool = False,
        refused: bool = False,
    ) -> None:
        super().__init__(error)
        self.status, self.error, self.http_status = status, error[:300], http_status
        self.retry, self.wait, self.unreachable = retry, wait, unreachable
        self.refused = refused  # nothing listens there: no reply is coming


def _host_slot(host: str, cap: int) -> threading.BoundedSemaphore:
    """One semaphore per host per process, so concurrent shards share the cap."""
    with _HOST_LOCK:
        return _HOST_SLOTS.setdefault((host, cap), threading.BoundedSemaphore(cap))


class Fetcher:
    """Downloads URLs over one connection pool per host; safe to call from many threads."""

    def __init__(self, settings: Settings, pool_size: int | None = None) -> None:
        self.s = settings
        self.http = urllib3.PoolManager(
            num_pools=64,
            maxsize=pool_size or settings.fetch_workers,
            headers={"User-Agent": settings.user_agent},
            timeout=urllib3.Timeout(connect=settings.connect_timeout, read=settings.read_timeout),
            # redirects followed (and counted) by urllib3; every other retry is ours
            retries=urllib3.Retry(
                total=None,
                connect=0,
                read=0,
                status=0,
                other=0,
                redirect=settings.max_redirects,
                raise_on_redirect=True,
                raise_on_status=False,
            ),
        )

    def close(self) -> None:
        self.http.clear()

    def attempt(self, url: str, attempt: int = 1) -> Download:
        """One try at ``url``. A failure that may pass (timeout, dropped connection, 429, 5xx)
        carries ``retry_in``: the caller schedules the next try instead of sleeping on a worker.
        A host marked down is not asked at all: ``host_down``, retryable in a later run."""
        if url_problem(url) is not None:
            return Download("invalid_url", error=f"unsupported URL {url[:200]!r}", attempts=1)
        parts = urlparse(url)
        if parts.scheme == "file":
            return self._read_file(parts.path)
        host = host_key(url)
        with _host_slot(host.rpartition(":")[0], self.s.fetch_per_host):
            return self._guarded(url, host, attempt)

    def _guarded(self, url: str, host: str, attempt: int) -> Download:
        """One try, if the host's breaker lets it go (asked once a slot is ours: a thread that
        waited for the slot learns of a breaker that opened meanwhile)."""
        guard = breaker(host, self.s)
        if not guard.admit():
            why = guard.state().reason
            return Download(
                "host_down", error=f"{host} is down ({why}); not requested", attempts=attempt - 1
            )
        try:
            body, code = self._attempt(url)
        except _Failure as f:
            if f.unreachable:
                guard.failed(url, f.error, refused=f.refused)
            else:
                guard.answered()
            retry_in = None
            if f.retry:
                retry_in = backoff_delay(
                    attempt, base=self.s.backoff_base, most=self.s.backoff_max, retry_after=f.wait
                )
            return Download(f.status, b"", f.http_status, f.error, attempt, retry_in)
        guard.answered()
        return Download("ok", body, code, attempts=attempt)

    def _attempt(self, url: str) -> tuple[bytes, int]:
        try:
            resp = self.http.request("GET", url, preload_content=False)
        except MaxRetryError as exc:
            raise _classify(exc.reason or exc) from exc
        except (HTTPError, OSError, ValueError) as exc:
            raise _classify(exc) from exc
        complete = False
        try:
            self._check_status(resp)
            body = self._read_body(resp)
            complete = True
            return body, resp.status
        except _Failure as f:
            f.http_status = resp.status
            raise
        except (HTTPError, OSError) as exc:  # while reading the body
            raise _classify(exc, resp.status) from exc
        finally:
            if not complete:  # never hand a half-read connection back to the pool
                resp.close()
            resp.release_conn()

    def _check_status(self, resp: urllib3.BaseHTTPResponse) -> None:
        code = resp.status
        if code < 400:
            return
        if code in (404, 410):
            raise _Failure("http_404", f"HTTP {code}", code)
        wait = retry_after_seconds(resp.headers.get("Retry-After"))
        raise _Failure(
            "http_error",
            f"HTTP {code} {resp.reason or ''}".strip(),
            code,
            retry=code in TRANSIENT_STATUSES,
            wait=wait,
        )

    def _read_body(self, resp: urllib3.BaseHTTPResponse) -> bytes:
        limit = self.s.max_body_bytes
        length = resp.headers.get("Content-Length")
        if length and length.isdigit() and int(length) > limit:
            raise _Failure("too_large", f"Content-Length {length} exceeds {limit} bytes")
        deadline = time.monotonic() + self.s.fetch_deadline
        chunks, total = [], 0
        for chunk in resp.stream(1 << 16):
            total += len(chunk)
            if total > limit:
                raise _Failure("too_large", f"body exceeds {limit} bytes")
            if time.monotonic() > deadline:
                raise _Failure(
                    "timeout",
                    f"body not received in {self.s.fetch_deadline}s",
                    retry=True,
                    unreachable=True,
                )
            chunks.append(chunk)
        return b"".join(chunks)

    def _read_file(self, path: str) -> Download:
        if not self.s.allow_file_urls:
            return Download(
                "blocked_scheme",
                error="file:// URLs are disabled; rerun with --allow-file-urls "
                "(PROMPTLAKE_ALLOW_FILE_URLS=1) and --retry-failed for a dataset you trust",
                attempts=0,
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


def _classify(exc: BaseException, code: int | None = None) -> _Failure:
    """The row status of a transport error: no reply at all is what host breakers count."""
    text = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, ResponseError):  # urllib3's redirect budget ran out
        return _Failure("too_many_redirects", text, code)
    if isinstance(exc, LocationValueError):  # e.g. a host name IDNA cannot encode
        return _Failure("invalid_url", text, code)
    if isinstance(exc, NameResolutionError):  # a DNS blip is not a dead host: no quick opening
        return _Failure("dns_error", text, code, retry=True, unreachable=True)
    if isinstance(exc, NewConnectionError):  # before ConnectTimeoutError, which it may also be
        # refused: nothing listens there, a definite answer; unreachable networks are this
        # machine's trouble, counted like timeouts
        refused = isinstance(exc.__cause__ or exc.__context__, ConnectionRefusedError)
        return _Failure(
            "connection_error", text, code, retry=True, unreachable=True, refused=refused
        )
    if isinstance(exc, (ConnectTimeoutError, ReadTimeoutError, TimeoutError)):
        return _Failure("timeout", f"timed out: {text}", code, retry=True, unreachable=True)
    if isinstance(exc, (ProtocolError, SSLError, ConnectionError)):  # resets, cut bodies
        return _Failure("connection_error", text, code, retry=True, unreachable=True)
    if isinstance(exc, DecodeError):
        return _Failure("http_error", text, code)
    if isinstance(exc, (HTTPError, OSError)):
        return _Failure("connection_error", text, code, retry=True, unreachable=True)
    return _Failure("invalid_url", text, code)  # ValueError from a URL urllib3 cannot use
