"""llm: chat completions from any OpenAI-compatible endpoint, through the ``openai`` SDK.

Works with OpenAI, vLLM, Ollama (``http://localhost:11434/v1``) and llama.cpp's server, which all
document this SDK. Retries are the SDK's: timeouts, dropped connections, 408, 409, 429 and 5xx,
``max_retries`` times, waiting what ``Retry-After`` asks (up to 2 minutes; a longer wait is not
retried) or else 0.5 s doubling to 8 s, jittered. The API key goes only into the Authorization
header and is scrubbed from every error; without a key no Authorization header is sent.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

import openai
from openai.types.chat import ChatCompletionMessageParam

# The SDK insists on a key; keyless local servers get this placeholder, never sent (see complete).
KEYLESS = "no-key"


class LLMError(RuntimeError):
    """The endpoint failed or answered something that is not a chat completion."""


@dataclass(frozen=True)
class ChatConfig:
    """Where and how to call the model. ``retries`` and ``timeout`` (seconds per try) go to the
    SDK's ``max_retries`` and ``timeout``."""

    base_url: str
    model: str
    api_key: str = field(default="", repr=False)
    timeout: float = 60.0
    retries: int = 3
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


@functools.lru_cache(maxsize=16)
def sdk_client(config: ChatConfig) -> openai.OpenAI:
    """One SDK client (and so one connection pool) per configuration and process: building one
    costs tens of milliseconds, more than a loopback completion."""
    return openai.OpenAI(
        base_url=config.base_url,
        api_key=config.api_key or KEYLESS,
        timeout=config.timeout,
        max_retries=config.retries,
    )


class ChatClient:
    """``complete(messages)`` → the reply text."""

    def __init__(self, config: ChatConfig) -> None:
        self.config = config

    def complete(self, messages: list[ChatCompletionMessageParam]) -> str:
        """One chat completion; raises LLMError with the endpoint and reason (never the key)."""
        cfg = self.config
        # keyless servers (Ollama, llama.cpp, vLLM without --api-key) get no Authorization at all
        headers = {} if cfg.api_key else {"Authorization": openai.omit}
        try:
            raw = sdk_client(cfg).chat.completions.with_raw_response.create(
                model=cfg.model,
                messages=messages,
                temperature=cfg.temperature,
                max_tokens=cfg.max_tokens,
                extra_headers=headers,
            )
        except openai.APIStatusError as exc:
            raise LLMError(self._scrub(self._status_message(exc))) from None
        except openai.APIError as exc:  # connection failures and timeouts, after the retries
            cause = f" ({exc.__cause__})" if exc.__cause__ else ""
            raise LLMError(
                self._scrub(
                    f"LLM endpoint {cfg.endpoint} failed after {cfg.retries + 1} tries: "
                    f"{exc}{cause}"
                )
            ) from None
        return self._content(raw)

    def _status_message(self, exc: openai.APIStatusError) -> str:
        hint = {
            401: " (check PROMPTLAKE_LLM_API_KEY)",
            404: " (check PROMPTLAKE_LLM_BASE_URL and PROMPTLAKE_LLM_MODEL)",
        }
        return (
            f"LLM endpoint {self.config.endpoint} answered HTTP {exc.status_code}"
            f"{hint.get(exc.status_code, '')}: {exc.response.text[:300]}"
        )

    def _content(self, raw: Any) -> str:
        """The reply's text; the SDK parses leniently, so the shape is checked here."""
        try:
            content = raw.parse().choices[0].message.content
        except (ValueError, AttributeError, IndexError, TypeError):
            content = None
        if not isinstance(content, str):
            raise LLMError(
                self._scrub(
                    f"LLM endpoint {self.config.endpoint} sent a reply that is not a chat "
                    f"completion (no choices[0].message.content): {raw.text[:300]!r}"
                )
            )
        if not content.strip():
            raise LLMError(f"LLM endpoint {self.config.endpoint} sent an empty completion")
        return content

    def _scrub(self, text: str) -> str:
        key = self.config.api_key
        return text.replace(key, "***") if key else text
