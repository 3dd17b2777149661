"""Route 4 (a synchronous POST) with `ASSISTANT_PROVIDER=openai` against a model that misbehaves.

The app runs with its real services, pointed at the loopback OpenAI-compatible server: a model
that stalls or cuts its stream answers within the stall bound, as a `failed` reply that keeps
the partial text.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest
from quart.typing import TestClientProtocol as Client

from chat.settings import Settings
from tests import databases
from tests.assistant.fake_openai import CUT_PIECES, HANG_PIECE, FakeOpenAI, fake_openai_server
from tests.conftest import Register, auth, make_settings

pytestmark = pytest.mark.anyio
BASE = "/api/v1/chat/conversations"
STALL_S = 0.3
# What each model's reply is stored with.
PARTIAL = {"hang": HANG_PIECE, "truncated": "".join(CUT_PIECES)}
CODE = {"hang": "upstream_stalled", "truncated": "upstream_truncated"}


@pytest.fixture(name="server")
async def fixture_server() -> AsyncIterator[FakeOpenAI]:
    async with fake_openai_server() as server:
        yield server


@pytest.fixture(name="model", params=list(PARTIAL))
def fixture_model(request: pytest.FixtureRequest) -> str:
    model: str = request.param
    return model


@pytest.fixture(name="settings")
def fixture_settings(
    tmp_path: Path, sqlite_template: Path, server: FakeOpenAI, model: str
) -> Settings:
    """The conftest's settings, with the OpenAI provider on the fake server (SQLite only)."""
    return make_settings(
        tmp_path,
        databases.sqlite_copy(sqlite_template, tmp_path),
        assistant_provider="openai",
        openai_base_url=server.base_url,
        openai_api_key="test-key",
        openai_model=model,
        # Long: only the stall bound (or the missing finish_reason) may end these replies.
        openai_timeout_s=30,
        openai_stall_s=STALL_S,
        openai_max_retries=0,
        # No MCP server: the first reply would wait for its cold start, and this measures the
        # model's stall bound alone (tests/tools/ covers the tools).
        mcp_parley_server=False,
    )


async def test_a_synchronous_post_answers_a_broken_stream_within_the_stall_bound(
    client: Client,
    register: Register,
    server: FakeOpenAI,
    model: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    me = await register()
    response = await client.post(BASE, json={}, headers=auth(me))
    assert response.status_code == 201
    cid = (await response.get_json())["id"]

    started = anyio.current_time()
    with anyio.fail_after(10):
        response = await client.post(
            f"{BASE}/{cid}/messages", json={"message": "Where is my order?"}, headers=auth(me)
        )
    elapsed = anyio.current_time() - started

    assert response.status_code == 201
    reply = await response.get_json()
    assert reply["role"] == "assistant"
    assert reply["status"] == "failed"
    assert reply["content"] == PARTIAL[model]
    assert reply["model_used"] == model
    # The failure says why, in the answer and when read back later.
    assert reply["error"]["code"] == CODE[model]
    assert reply["error"]["detail"]
    listed = await client.get(f"{BASE}/{cid}/messages", headers=auth(me))
    assert (await listed.get_json())["items"][-1]["error"] == reply["error"]
    assert elapsed < STALL_S + 2
    # Logged once, at WARNING, with the conversation.
    failures = [r for r in caplog.records if r.levelname == "WARNING" and cid in r.getMessage()]
    assert len(failures) == 1 and CODE[model] in failures[0].getMessage()
    if model == "hang":
        assert elapsed >= STALL_S
        with anyio.fail_after(5):
            await server.hang_closed.wait()
