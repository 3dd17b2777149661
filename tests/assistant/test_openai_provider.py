"""`OpenAIProvider` with the real `openai` client against a local OpenAI-compatible server.

First the provider on its own (text, usage, the request it sends, each failure's code), then
end to end through the actor runtime: what is stored and which events are published.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, aclosing, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import openai
import pytest
from databases import Database

from actors.config import ActorConfig
from actors.hub import Hub, Subscription
from actors.provider import ProviderError, ReplyInfo, ReplyPart, ReplyRequest, TextDelta, Turn
from actors.registry import Registry
from actors.store import DatabaseStore
from chat.assistant.openai_provider import (
    MAX_UPSTREAM_TEXT,
    SYSTEM_PROMPT,
    OpenAIProvider,
    redact,
)
from chat.assistant.providers import describe_provider, open_provider
from chat.settings import Settings
from storage.conversations import insert_conversation, select_conversation
from storage.database import create_database
from storage.users import insert_user
from tests import databases
from tests.assistant.fake_openai import (
    CUT_PIECES,
    HANG_PIECE,
    NORMAL_PIECES,
    SERVED_MODEL,
    USAGE,
    FakeOpenAI,
    fake_openai_server,
    free_port,
)

pytestmark = pytest.mark.anyio

API_KEY = "test-key"
HISTORY = (
    Turn("user", "Hi"),
    Turn("assistant", "Hello! What can I do for you?"),
    Turn("user", "Where is my order?"),
)
# The provider's deadlines for the models that go quiet (the others get generous ones): `hang`
# stalls after its first chunk, `silent` never sends one.
STALL_S = 0.3
SILENT_TIMEOUT_S = 0.5


@pytest.fixture(name="server")
async def fixture_server() -> AsyncIterator[FakeOpenAI]:
    async with fake_openai_server() as server:
        yield server


@asynccontextmanager
async def openai_provider(
    server: FakeOpenAI,
    model: str,
    *,
    timeout_s: float = 5.0,
    stall_s: float = 5.0,
    max_retries: int = 1,
    api_key: str = API_KEY,
    base_url: str | None = None,
) -> AsyncIterator[OpenAIProvider]:
    provider = OpenAIProvider(
        base_url=base_url or server.base_url,
        api_key=api_key,
        model=model,
        timeout_s=timeout_s,
        max_retries=max_retries,
        stall_s=stall_s,
    )
    try:
        yield provider
    finally:
        await provider.close()


def provider_for(server: FakeOpenAI, model: str) -> AbstractAsyncContextManager[OpenAIProvider]:
    """The provider for a model of the fake server: `hang` and `silent` get short deadlines."""
    if model == "hang":
        return openai_provider(server, model, stall_s=STALL_S, max_retries=0)
    if model == "silent":
        return openai_provider(server, model, timeout_s=SILENT_TIMEOUT_S, max_retries=0)
    return openai_provider(server, model)


async def run(
    provider: OpenAIProvider, request: ReplyRequest
) -> tuple[list[ReplyPart], ProviderError | None]:
    """Every part the provider yields, and the `ProviderError` it ends with, if any."""
    parts: list[ReplyPart] = []
    try:
        async with aclosing(provider.stream(request)) as stream:
            async for part in stream:
                parts.append(part)
    except ProviderError as error:
        return parts, error
    return parts, None


def texts(parts: list[ReplyPart]) -> list[str]:
    return [p.text for p in parts if isinstance(p, TextDelta)]


def infos(parts: list[ReplyPart]) -> list[ReplyInfo]:
    return [p for p in parts if isinstance(p, ReplyInfo)]


def a_request() -> ReplyRequest:
    return ReplyRequest(uuid.uuid4(), uuid.uuid4(), HISTORY)


# --- The provider on its own ------------------------------------------------------------------


async def test_a_streamed_reply_yields_text_model_and_usage(server: FakeOpenAI) -> None:
    request = a_request()
    with anyio.fail_after(10):
        async with openai_provider(server, "normal") as provider:
            parts, error = await run(provider, request)
    assert error is None
    assert texts(parts) == list(NORMAL_PIECES)
    # Named up front, then the usage, then the model the server says it used.
    assert infos(parts) == [
        ReplyInfo(model="normal"),
        ReplyInfo(
            prompt_tokens=USAGE["prompt_tokens"], completion_tokens=USAGE["completion_tokens"]
        ),
        ReplyInfo(model=SERVED_MODEL),
    ]
    assert isinstance(parts[0], ReplyInfo)
    assert isinstance(parts[-1], ReplyInfo)

    assert server.attempts("normal") == 1
    body = server.requests[0]
    assert body["model"] == "normal"
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["user"] == str(request.user_id)
    assert body["messages"] == [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello! What can I do for you?"},
        {"role": "user", "content": "Where is my order?"},
    ]
    headers = {k.lower(): v for k, v in server.headers[0].items()}
    assert headers["authorization"] == f"Bearer {API_KEY}"


async def test_an_http_500_is_retried_then_an_upstream_error(server: FakeOpenAI) -> None:
    with anyio.fail_after(10):
        async with openai_provider(server, "error500", max_retries=1) as provider:
            parts, error = await run(provider, a_request())
    assert error is not None
    assert error.code == "upstream_error"
    assert "500" in str(error)
    assert isinstance(error.__cause__, openai.InternalServerError)
    assert server.attempts("error500") == 1 + 1
    assert texts(parts) == []
    assert infos(parts) == [ReplyInfo(model="error500")]


async def test_an_http_429_is_rate_limited(server: FakeOpenAI) -> None:
    with anyio.fail_after(10):
        async with openai_provider(server, "error429", max_retries=1) as provider:
            parts, error = await run(provider, a_request())
    assert error is not None
    assert error.code == "rate_limited"
    assert isinstance(error.__cause__, openai.RateLimitError)
    assert server.attempts("error429") == 1 + 1
    assert texts(parts) == []


async def test_a_dropped_connection_fails_after_the_pieces_already_sent(
    server: FakeOpenAI,
) -> None:
    with anyio.fail_after(10):
        async with openai_provider(server, "cut") as provider:
            parts, error = await run(provider, a_request())
    assert error is not None
    assert error.code == "upstream_truncated"
    assert str(error) == "the connection to the model was lost"
    assert isinstance(error.__cause__, openai.APIConnectionError)
    assert texts(parts) == list(CUT_PIECES)
    # A broken stream is not retried: the pieces were already handed on.
    assert server.attempts("cut") == 1


async def test_an_error_in_the_middle_of_the_stream_is_an_upstream_error(
    server: FakeOpenAI,
) -> None:
    with anyio.fail_after(10):
        async with openai_provider(server, "midstream_error") as provider:
            parts, error = await run(provider, a_request())
    assert error is not None
    assert error.code == "upstream_error"
    assert "overloaded" in str(error)
    assert texts(parts) == ["Partial "]


async def test_a_stream_that_ends_without_a_finish_reason_is_truncated(
    server: FakeOpenAI,
) -> None:
    with anyio.fail_after(10):
        async with openai_provider(server, "truncated") as provider:
            parts, error = await run(provider, a_request())
    assert error is not None
    assert error.code == "upstream_truncated"
    assert str(error) == "the model's reply ended before it was finished"
    assert texts(parts) == list(CUT_PIECES)
    assert server.attempts("truncated") == 1


async def test_a_finish_reason_without_done_is_a_complete_reply(server: FakeOpenAI) -> None:
    with anyio.fail_after(10):
        async with openai_provider(server, "no_done") as provider:
            parts, error = await run(provider, a_request())
    assert error is None
    assert texts(parts) == list(NORMAL_PIECES)


@pytest.mark.parametrize("reason", ["length", "content_filter"])
async def test_a_reply_cut_short_by_the_model_is_a_failure(server: FakeOpenAI, reason: str) -> None:
    with anyio.fail_after(10):
        async with openai_provider(server, reason) as provider:
            parts, error = await run(provider, a_request())
    # All the text is kept, but it is not a complete answer.
    assert texts(parts) == list(NORMAL_PIECES)
    assert error is not None and error.code == f"upstream_{reason}"


async def test_a_stream_that_stalls_ends_after_the_stall_bound_and_hangs_up(
    server: FakeOpenAI,
) -> None:
    with anyio.fail_after(10):
        # The first-chunk timeout is long: only the stall bound can end this stream early.
        async with openai_provider(
            server, "hang", timeout_s=30, stall_s=STALL_S, max_retries=0
        ) as provider:
            started = anyio.current_time()
            parts, error = await run(provider, a_request())
            elapsed = anyio.current_time() - started
            # The server sees the client hang up: the stalled connection is not kept.
            await server.hang_closed.wait()
    assert error is not None
    assert error.code == "upstream_stalled"
    assert str(error) == f"the model stopped sending for more than {STALL_S:g} s"
    assert texts(parts) == [HANG_PIECE]
    assert server.attempts("hang") == 1
    assert STALL_S <= elapsed < STALL_S + 2


async def test_a_model_that_never_sends_a_chunk_times_out(server: FakeOpenAI) -> None:
    with anyio.fail_after(10):
        async with provider_for(server, "silent") as provider:
            started = anyio.current_time()
            parts, error = await run(provider, a_request())
            elapsed = anyio.current_time() - started
    assert error is not None
    assert error.code == "timeout"
    assert str(error) == f"the model did not start answering within {SILENT_TIMEOUT_S:g} s"
    assert texts(parts) == []
    assert SILENT_TIMEOUT_S <= elapsed < SILENT_TIMEOUT_S + 2


async def test_a_refused_connection_is_unreachable(server: FakeOpenAI) -> None:
    port = free_port()
    with anyio.fail_after(10):
        async with openai_provider(
            server, "normal", base_url=f"http://127.0.0.1:{port}/v1", max_retries=0
        ) as provider:
            parts, error = await run(provider, a_request())
    assert error is not None
    assert error.code == "upstream_unreachable"
    assert str(error) == f"could not connect to the model at http://127.0.0.1:{port}"
    assert texts(parts) == []


@pytest.mark.parametrize("key", ["sk-proj-AbCdEf0123456789xyz", "local-secret-0123456789"])
async def test_the_upstream_error_text_is_kept_with_the_key_redacted(
    server: FakeOpenAI, key: str
) -> None:
    with anyio.fail_after(10):
        async with openai_provider(server, "unauthorized", api_key=key) as provider:
            _, error = await run(provider, a_request())
    assert error is not None
    assert error.code == "upstream_error"
    assert isinstance(error.__cause__, openai.AuthenticationError)
    message = str(error)
    assert message.startswith("the model answered with HTTP 401: Incorrect API key provided: ")
    assert key not in message
    assert "***" in message
    assert "\n" not in message
    assert len(message) <= 300
    # Not retried: a wrong key stays wrong.
    assert server.attempts("unauthorized") == 1


def test_redact_masks_keys_and_tokens_and_bounds_the_text() -> None:
    text = "bad key sk-abc123DEF456 and\nBearer eyJhbGciOiJIUzI1NiJ9.e30.c2ln; mine: my-local-key-1"
    assert redact(text, "my-local-key-1") == "bad key sk-*** and Bearer ***; mine: ***"
    assert redact("Bearer abcdefghijklmnopqrstuvwxyz") == "Bearer ***"
    assert redact("Missing bearer authentication header") == (
        "Missing bearer authentication header"
    )
    assert redact("x" * 1000).endswith("…")
    assert len(redact("x" * 1000)) <= MAX_UPSTREAM_TEXT


async def test_openai_without_a_key_warns_at_start(caplog: pytest.LogCaptureFixture) -> None:
    settings = Settings(
        assistant_provider="openai", openai_base_url="https://user:pw@api.example.com/v1/x"
    )
    with caplog.at_level(logging.WARNING, logger="chat.assistant.providers"):
        async with open_provider(settings) as provider:
            description = describe_provider(provider)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    assert "OPENAI_API_KEY" in message
    assert "local endpoint may need none" in message
    assert "pw" not in message
    assert description == {
        "provider": "openai",
        "model": settings.openai_model,
        "base_url": "https://api.example.com",
    }


async def test_openai_with_a_key_starts_quietly(caplog: pytest.LogCaptureFixture) -> None:
    settings = Settings(assistant_provider="openai", openai_api_key="sk-configured-key")
    with caplog.at_level(logging.WARNING, logger="chat.assistant.providers"):
        async with open_provider(settings):
            pass
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


# --- End to end through the actor runtime -----------------------------------------------------


@dataclass
class Expected:
    status: str
    content: str
    events: list[str]
    code: str | None = None
    model_used: str | None = None


EXPECTED = {
    "normal": Expected(
        "complete",
        "".join(NORMAL_PIECES),
        ["message", *["chunk"] * len(NORMAL_PIECES), "complete", "conversation_updated"],
        model_used=SERVED_MODEL,
    ),
    "error500": Expected(
        "failed", "", ["message", "error", "conversation_updated"], "upstream_error", "error500"
    ),
    "error429": Expected(
        "failed", "", ["message", "error", "conversation_updated"], "rate_limited", "error429"
    ),
    "cut": Expected(
        "failed",
        "".join(CUT_PIECES),
        ["message", "chunk", "chunk", "error", "conversation_updated"],
        "upstream_truncated",
        "cut",
    ),
    "truncated": Expected(
        "failed",
        "".join(CUT_PIECES),
        ["message", "chunk", "chunk", "error", "conversation_updated"],
        "upstream_truncated",
        "truncated",
    ),
    "hang": Expected(
        "failed",
        HANG_PIECE,
        ["message", "chunk", "error", "conversation_updated"],
        "upstream_stalled",
        "hang",
    ),
}


@dataclass
class Conversations:
    db: Database
    user_id: uuid.UUID

    async def new(self) -> uuid.UUID:
        conversation = await insert_conversation(
            self.db,
            user_id=self.user_id,
            title="New conversation",
            title_set_by_user=False,
            retention_days=30,
        )
        return conversation.id


@pytest.fixture(name="conversations")
async def fixture_conversations(
    sqlite_template: Path, tmp_path: Path
) -> AsyncIterator[Conversations]:
    db: Database = create_database(databases.sqlite_copy(sqlite_template, tmp_path))
    await db.connect()
    try:
        user = await insert_user(
            db, email="openai@example.com", password_hash="x", display_name=None
        )
        yield Conversations(db, user.id)
    finally:
        await db.disconnect()


async def events_until_updated(subscription: Subscription) -> list[dict[str, Any]]:
    """The events of one exchange, up to the `conversation_updated` that closes it."""
    events: list[dict[str, Any]] = []
    with anyio.fail_after(5):
        while not events or events[-1]["type"] != "conversation_updated":
            event = await subscription.receive()
            assert event is not None
            events.append(json.loads(event.data))
    return events


@pytest.mark.parametrize("model", list(EXPECTED))
async def test_the_actor_stores_and_publishes_the_outcome(
    server: FakeOpenAI, conversations: Conversations, model: str
) -> None:
    expected = EXPECTED[model]
    cid = await conversations.new()
    hub = Hub()
    with anyio.fail_after(10):
        async with provider_for(server, model) as provider, anyio.create_task_group() as tg:
            registry = Registry(
                store=DatabaseStore(conversations.db),
                provider=provider,
                hub=hub,
                config=ActorConfig(),
            )
            await tg.start(registry.run)
            with hub.subscribe(cid) as subscription:
                command = await registry.post_message(
                    conversations.user_id, cid, "Where is my order?"
                )
                accepted = await command.accepted.wait()
                reply = await command.finished.wait()
                events = await events_until_updated(subscription)
            await registry.drain()

    assert reply.id == accepted.reply_id
    assert reply.role == "assistant"
    assert reply.status == expected.status
    assert reply.content == expected.content
    assert reply.model_used == expected.model_used

    assert [e["type"] for e in events] == expected.events
    chunks = [e["content"] for e in events if e["type"] == "chunk"]
    assert "".join(chunks) == expected.content
    final = events[-2]
    assert final["message"]["id"] == str(reply.id)
    assert final["message"]["status"] == expected.status
    assert final["message"]["content"] == expected.content

    conversation = await select_conversation(conversations.db, conversations.user_id, cid)
    assert conversation is not None
    assert conversation.total_messages == 2
    if expected.status == "complete":
        assert reply.prompt_tokens == USAGE["prompt_tokens"]
        assert reply.completion_tokens == USAGE["completion_tokens"]
        assert conversation.total_tokens_used == USAGE["total_tokens"]
        assert "code" not in final
    else:
        assert final["code"] == expected.code
        assert final["error"]
        assert final["message_id"] == str(reply.id)
        assert reply.prompt_tokens is None
        assert reply.completion_tokens is None
        assert conversation.total_tokens_used == 0
    # The question the model got is the one just posted, after the system prompt.
    sent = server.requests[-1]["messages"]
    assert sent == [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": "Where is my order?"},
    ]
