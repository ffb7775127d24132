"""The one retry rule: exponential backoff with jitter, and a server's ``Retry-After`` honoured
within our own ceiling. Every retrying caller (image fetch, image generators) asks it."""

from __future__ import annotations

import email.utils
import random
import time

# HTTP statuses that say "try again later": a timeout, a rate limit, the server's own trouble
TRANSIENT_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None
    return max(0.0, when - (time.time() if now is None else now))


def backoff_delay(
    attempt: int, *, base: float, most: float, retry_after: float | None = None
) -> float:
    """Seconds before try ``attempt + 1`` after try ``attempt`` (1-based) failed: what the
    server asked for (capped at ``most``), else ``base * 2**(attempt-1)`` capped at ``most``,
    jittered to 50–100% so that many clients do not retry in step."""
    if attempt < 1:
        raise ValueError(f"attempt counts from 1, got {attempt}")
    if retry_after is not None:
        return min(retry_after, most)
    return min(most, base * 2 ** (attempt - 1)) * (0.5 + random.random() / 2)
