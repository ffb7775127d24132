"""llm: a small client for OpenAI-compatible chat-completions endpoints.

Works with OpenAI, vLLM, Ollama (``http://localhost:11434/v1``) and llama.cpp's server. The API
key is sent only in the Authorization header and is scrubbed from every error message.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import requests

from promptlake.tasks.backoff import backoff_delay, retry_after_seconds

RETRY_STATUSES = {408, 409, 425, 429, 500, 502, 503, 504}


class LLMError(RuntimeError):
    """The endpoint failed or answered something that is not a chat completion."""


@dataclass(frozen=True)
class ChatConfig:
    """Where and how to call the model."""

    base_url: str
    model: str
    api_key: str = ""
    timeout: float = 60.0
    retries: int = 3
    backoff_base: float = 1.0
    backoff_max: float = 30.0
    temperature: float = 0.8
    max_tokens: int = 800

    def __post_init__(self) -> None:
        if not self.base_url.startswith(("http://", "https://")):
            raise LLMError(
                f"LLM base URL must start with http:// or https://, got {self.base_url!r}"
            )
        if not self.model:
            raise LLMError("no LLM model set: set PROMPTLAKE_LLM_MODEL (e.g. gpt-4o-mini)")

    @property
    def endpoint(self) -> str:
        return self.base_url.rstrip("/") + "/chat/completions"


def post_with_retries(
    session: requests.Session,
    url: str,
    *,
    body: dict,
    headers: dict[str, str],
    timeout: float,
    retries: int,
    backoff: tuple[float, float],
    scrub: Callable[[str], str] = str,
    error: type[Exception] = LLMError,
) -> requests.Response:
    """POST JSON; retry timeouts, dropped connections, 429 and 5xx with exponential backoff and
    jitter (honouring Retry-After). Returns the last reply; a network failure after the last
    retry raises ``error`` (its text passed through ``scrub``)."""
    base, most = backoff
    for attempt in range(retries + 1):
        last = attempt == retries
        try:
            reply = session.post(url, json=body, headers=headers, timeout=timeout)
        except requests.RequestException as exc:
            if last:
                raise error(scrub(f"endpoint {url} failed: {exc}")) from None
            time.sleep(backoff_delay(attempt + 1, base=base, most=most))
            continue
        if reply.status_code not in RETRY_STATUSES or last:
            return reply
        after = retry_after_seconds(reply.headers.get("Retry-After"))
        time.sleep(backoff_delay(attempt + 1, base=base, most=most, retry_after=after))
    raise AssertionError("unreachable")  # the last attempt returns or raises


class ChatClient:
    """``complete(messages)`` → the reply text, with retries on 429/5xx and timeouts."""

    def __init__(self, config: ChatConfig, session: requests.Session | None = None) -> None:
        self.config = config
        self.session = session or requests.Session()

    def complete(self, messages: list[dict[str, str]]) -> str:
        """One chat completion; raises LLMError with the endpoint and reason (never the key)."""
        cfg = self.config
        body = {
            "model": cfg.model,
            "messages": messages,
            "temperature": cfg.temperature,
            "max_tokens": cfg.max_tokens,
        }
        headers = {"Content-Type": "application/json"}
        if cfg.api_key:
            headers["Authorization"] = f"Bearer {cfg.api_key}"
        reply = post_with_retries(
            self.session,
            cfg.endpoint,
            body=body,
            headers=headers,
            timeout=cfg.timeout,
            retries=cfg.retries,
            backoff=(cfg.backoff_base, cfg.backoff_max),
            scrub=self._scrub,
        )
        if reply.status_code != 200:
            raise LLMError(self._scrub(self._status_message(reply)))
        return self._content(reply)

    def _status_message(self, reply: requests.Response) -> str:
        hint = {
            401: " (check PROMPTLAKE_LLM_API_KEY)",
            404: " (check PROMPTLAKE_LLM_BASE_URL and PROMPTLAKE_LLM_MODEL)",
        }
        return (
            f"LLM endpoint {self.config.endpoint} answered HTTP {reply.status_code}"
            f"{hint.get(reply.status_code, '')}: {reply.text[:300]}"
        )

    def _content(self, reply: requests.Response) -> str:
        try:
            data = reply.json()
            content = data["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise LLMError(
                self._scrub(
                    f"LLM endpoint {self.config.endpoint} sent a reply that is not a chat "
                    f"completion (no choices[0].message.content): {reply.text[:300]!r}"
                )
            ) from None
        if not isinstance(content, str) or not content.strip():
            raise LLMError(f"LLM endpoint {self.config.endpoint} sent an empty completion")
        return content

    def _scrub(self, text: str) -> str:
        key = self.config.api_key
        return text.replace(key, "***") if key else text
