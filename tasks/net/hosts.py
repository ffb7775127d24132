"""Per-host circuit breakers: a host that stops answering costs one round of timeouts, not one
per row and retry. Shared by every fetch thread of a process (one breaker per host and setting).

A breaker is *closed* while its host answers. After ``threshold`` distinct URLs of the host failed
to connect in a row (timeouts, refused connections, resets; any HTTP reply, 403 and 404 included,
is an answer and resets the count) it *opens*: requests to the host are not sent and their rows
get the retryable status ``host_down``. Unless one of those failures was a refused connection
(nothing listens: definite), the host must also have been silent for ``quiet`` seconds (counted
from the breaker's first use when it never answered): timeouts, resets, unreachable networks and
names that did not resolve (``dns_error``: a resolver's blip fails every host at once) are also
what a live host that stalls for a moment, or a busy machine, looks like. Every ``cooldown``
seconds one trial request goes through (*half-open*; rows that come meanwhile are
``host_down`` too); an answer closes the breaker, a failure keeps it open. ``--retry-failed``
resets the breakers of the hosts whose rows it retries (``host_down``, ``dns_error``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from urllib3.util import parse_url

from promptlake.settings import Settings

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
_DEFAULT_PORTS = {"http": 80, "https": 443}


def host_key(url: str) -> str:
    """``host:port`` of an http(s) URL (the unit a breaker guards), or ``""`` for other URLs."""
    try:
        parts = parse_url(url)
    except ValueError:
        return ""
    if parts.scheme not in _DEFAULT_PORTS or not parts.host:
        return ""
    return f"{parts.host}:{parts.port or _DEFAULT_PORTS[parts.scheme]}"


@dataclass
class HostState:
    """What a breaker knows, for reports."""

    host: str
    state: str
    failing: int
    reason: str


class HostBreaker:
    """One host's breaker; thread-safe."""

    def __init__(
        self,
        host: str,
        *,
        threshold: int,
        cooldown: float,
        quiet: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if threshold < 1 or cooldown <= 0 or quiet < 0:
            raise ValueError(f"bad breaker settings: {threshold=}, {cooldown=}, {quiet=}")
        self.host, self.threshold, self.cooldown, self.quiet = host, threshold, cooldown, quiet
        self._clock = clock
        self._lock = threading.Lock()
        self._state = CLOSED
        self._failing: set[str] = set()  # distinct URLs failed since the host last answered
        self._refused = False  # since then: a refused connection is definite, a timeout is not
        self._reason = ""
        self._next_trial = 0.0
        # a process that starts while the host (or this machine) is slow has no answer yet: its
        # silence counts from its first request, not from the start of time
        self._last_answer: float = clock()

    def admit(self) -> bool:
        """May a request go now? Always while closed; else one trial per cooldown."""
        with self._lock:
            if self._state == CLOSED:
                return True
            now = self._clock()
            if now < self._next_trial:
                return False
            self._state, self._next_trial = HALF_OPEN, now + self.cooldown
            return True

    def answered(self) -> None:
        """The host replied (any HTTP status): it is up."""
        with self._lock:
            self._state, self._reason, self._refused = CLOSED, "", False
            self._failing.clear()
            self._last_answer = self._clock()

    def reset(self) -> None:
        """Closed, as if never asked: a deliberate retry of the host's rows."""
        with self._lock:
            self._state, self._reason, self._last_answer = CLOSED, "", self._clock()
            self._refused = False
            self._failing.clear()

    def failed(self, url: str, reason: str, *, refused: bool = False) -> None:
        """A request to ``url`` got no reply (a timeout, a reset, or ``refused``). Retries of one
        URL count once, so a few broken URLs on a live host never add up to a dead host."""
        with self._lock:
            self._failing.add(url)
            self._reason = reason
            self._refused = self._refused or refused
            now = self._clock()
            silent = self._refused or now - self._last_answer >= self.quiet
            if self._state != CLOSED:  # a failed trial (or a late failure): stay open
                self._state = OPEN
            elif len(self._failing) >= self.threshold and silent:
                self._state, self._next_trial = OPEN, now + self.cooldown

    def state(self) -> HostState:
        with self._lock:
            return HostState(self.host, self._state, len(self._failing), self._reason)


_BREAKERS: dict[tuple[str, int, float, float], HostBreaker] = {}
_LOCK = threading.Lock()


def breaker(host: str, s: Settings) -> HostBreaker:
    """The process-wide breaker of ``host`` for these settings (``host_quiet_seconds`` of
    silence before timeouts alone mark a host down)."""
    quiet = s.host_quiet_seconds
    key = (host, s.host_failure_threshold, s.host_probe_seconds, quiet)
    with _LOCK:
        if key not in _BREAKERS:
            _BREAKERS[key] = HostBreaker(host, threshold=key[1], cooldown=key[2], quiet=quiet)
        return _BREAKERS[key]


def reset(hosts: Iterable[str]) -> None:
    """Close the breakers of ``hosts`` (a deliberate retry of their rows): a host still down
    costs one more round of failures, then opens again."""
    wanted = set(hosts)
    with _LOCK:
        found = [b for (host, *_), b in _BREAKERS.items() if host in wanted]
    for b in found:
        b.reset()
