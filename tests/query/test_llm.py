"""The OpenAI-compatible chat client (the openai SDK) against a loopback server that speaks the
protocol."""

import json
import time

import pytest

from promptlake.tasks.query.llm import ChatClient, ChatConfig, LLMError
from promptlake.tasks.query.refine import parse_variants
from tests.helpers.api_servers import ChatServer, completion

KEY = "sk-test-5ecret-key"


@pytest.fixture
def chat():
    with ChatServer() as srv:
        yield srv


def client(srv: ChatServer, **kw) -> ChatClient:
    cfg = {"base_url": srv.base_url, "model": "tiny-llm", "api_key": KEY}
    return ChatClient(ChatConfig(**{**cfg, **kw}))


MESSAGES = [
    {"role": "system", "content": "examples:\n- a fox, watercolor"},
    {"role": "user", "content": "a cat"},
]


def test_request_body_and_auth_header(chat):
    reply = client(chat, temperature=0.3).complete(MESSAGES)
    assert json.loads(reply) == ["a cat, watercolor, highly detailed"]
    (req,) = chat.requests
    assert req["path"] == "/v1/chat/completions"
    assert req["headers"]["authorization"] == f"Bearer {KEY}"
    assert req["json"]["model"] == "tiny-llm" and req["json"]["messages"] == MESSAGES
    assert req["json"]["temperature"] == 0.3 and req["json"]["max_tokens"] > 0


def test_no_key_sends_no_auth_header(chat, monkeypatch):
    # keyless local servers (Ollama, llama.cpp): the SDK's own key variable is not picked up
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-the-environment")
    client(chat, api_key="").complete(MESSAGES)
    assert "authorization" not in chat.requests[0]["headers"]


def test_key_stays_out_of_the_config_repr(chat):
    assert KEY not in repr(client(chat).config)


def test_retries_5xx_then_succeeds(chat):
    chat.script = [(500, "oops", {}), (503, "busy", {}), (200, completion('["ok"]'), {})]
    assert client(chat, retries=2).complete(MESSAGES) == '["ok"]'
    tries = [r["headers"].get("x-stainless-retry-count") for r in chat.requests]
    assert tries == ["0", "1", "2"]


def test_429_waits_what_retry_after_asks(chat):
    chat.script = [(429, {"error": "slow down"}, {"Retry-After": "2"})]
    start = time.monotonic()
    assert json.loads(client(chat, retries=1).complete(MESSAGES))
    # the SDK's own first backoff is at most 0.5 s: waiting 2 s means Retry-After was honoured
    assert time.monotonic() - start >= 1.9 and len(chat.requests) == 2


def test_retry_after_beyond_two_minutes_is_not_retried(chat):
    chat.script = [(429, {"error": "come back tomorrow"}, {"Retry-After": "86400"})]
    with pytest.raises(LLMError, match="answered HTTP 429"):
        client(chat, retries=3).complete(MESSAGES)
    assert len(chat.requests) == 1


def test_gives_up_after_retries_without_leaking_the_key(chat):
    chat.script = [(503, f"busy; you sent Bearer {KEY}", {})] * 3
    with pytest.raises(LLMError, match="answered HTTP 503") as err:
        client(chat, retries=2).complete(MESSAGES)
    assert len(chat.requests) == 3 and KEY not in str(err.value) and "***" in str(err.value)
    assert KEY not in repr(err.value.__cause__) and err.value.__cause__ is None


def test_auth_failure_is_not_retried_and_says_what_to_check(chat):
    chat.script = [(401, {"error": {"message": f"bad key {KEY}"}}, {})]
    with pytest.raises(LLMError, match="PROMPTLAKE_LLM_API_KEY") as err:
        client(chat).complete(MESSAGES)
    assert len(chat.requests) == 1 and KEY not in str(err.value)


@pytest.mark.parametrize(
    "body",
    [
        {"choices": []},
        {"result": "hi"},
        {"choices": [{"message": {"role": "assistant"}}]},
        "<html>proxy error</html>",
    ],
)
def test_malformed_reply_is_a_clear_error(chat, body):
    chat.script = [(200, body, {})]
    with pytest.raises(LLMError, match="not a chat completion"):
        client(chat).complete(MESSAGES)


def test_unreachable_endpoint_and_bad_config():
    cfg = ChatConfig(base_url="http://127.0.0.1:9/v1", model="m", api_key=KEY, retries=1)
    with pytest.raises(LLMError, match="failed after 2 tries") as err:
        ChatClient(cfg).complete(MESSAGES)
    assert KEY not in str(err.value)
    with pytest.raises(LLMError, match="must start with http"):
        ChatConfig(base_url="localhost:11434", model="m")
    with pytest.raises(LLMError, match="PROMPTLAKE_LLM_MODEL"):
        ChatConfig(base_url="http://x/v1", model="")


def test_parse_variants_accepts_common_reply_shapes():
    assert parse_variants('["a", "b"]') == ["a", "b"]
    assert parse_variants('```json\n{"prompts": ["a, b", "c"]}\n```') == ["a, b", "c"]
    text = 'Here are 2 prompts:\n1. "a cat, oil painting"\n2) a cat, watercolor\n'
    assert parse_variants(text) == ["a cat, oil painting", "a cat, watercolor"]
    assert parse_variants("- one\n* two\n") == ["one", "two"]
