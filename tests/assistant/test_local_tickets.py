"""The offline assistant opens tickets through the MCP tool service, and says so honestly when
it cannot (no tools, or a server that fails)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest
from databases import Database

from actors.provider import (
    ReplyInfo,
    ReplyPart,
    ReplyRequest,
    TextDelta,
    ToolCall,
    ToolResult,
    Turn,
)
from chat.assistant.knowledge import KnowledgeBase, load_articles
from chat.assistant.local import (
    CREATE_TICKET,
    NO_TICKET_TOOLS,
    NOTHING_FOUND,
    TICKET_FAILED,
    TICKET_OFFER,
    LocalProvider,
)
from chat.settings import Settings
from chat.tools.config import ServerConfig, parley_server
from chat.tools.identity import derive_tools_secret
from chat.tools.service import ToolService
from storage.tickets import select_tickets
from tests.conftest import make_settings
from tests.test_storage import new_conversation, new_user

pytestmark = pytest.mark.anyio
ARTICLE_URL = "https://kb/{slug}"


@pytest.fixture(scope="module", name="knowledge")
def fixture_knowledge() -> KnowledgeBase:
    return KnowledgeBase(load_articles())


@pytest.fixture(name="settings")
def fixture_settings(tmp_path: Path, database_url: str) -> Settings:
    return make_settings(tmp_path, database_url)


async def running(servers: list[ServerConfig], settings: Settings) -> AsyncIterator[ToolService]:
    service = ToolService(
        servers, tools_secret=derive_tools_secret(settings.jwt_secret), call_timeout_s=20
    )
    async with anyio.create_task_group() as group:
        await group.start(service.run)
        try:
            yield service
        finally:
            await service.close()


@pytest.fixture(name="tools")
async def fixture_tools(settings: Settings) -> AsyncIterator[ToolService]:
    async for service in running([parley_server(settings)], settings):
        yield service


@pytest.fixture(name="broken_tools")
async def fixture_broken_tools(settings: Settings, tmp_path: Path) -> AsyncIterator[ToolService]:
    """Parley's server name, but a program that cannot start."""
    broken = ServerConfig(name="parley", command=str(tmp_path / "no-such-program"))
    async for service in running([broken], settings):
        yield service


async def reply(
    provider: LocalProvider,
    *turns: Turn,
    user_id: uuid.UUID | None = None,
    conversation_id: uuid.UUID | None = None,
) -> tuple[str, list[ReplyPart]]:
    request = ReplyRequest(
        conversation_id or uuid.uuid4(), user_id or uuid.uuid4(), turns, paced=False
    )
    parts = [part async for part in provider.stream(request)]
    text = "".join(p.text for p in parts if isinstance(p, TextDelta))
    return text, parts


def info_of(parts: list[ReplyPart]) -> ReplyInfo:
    return next(p for p in parts if isinstance(p, ReplyInfo) and p.model)


async def test_without_tools_it_says_it_cannot_and_calls_nothing(knowledge: KnowledgeBase) -> None:
    provider = LocalProvider(knowledge, token_delay_s=0, article_url=ARTICLE_URL)
    text, parts = await reply(provider, Turn("user", "open a ticket"))
    assert text.startswith(NO_TICKET_TOOLS)
    assert not [p for p in parts if isinstance(p, ToolCall | ToolResult)]

    # A yes to the offer gets only the apology: no article, no second offer.
    text, parts = await reply(
        provider,
        Turn("user", "my vase arrived broken"),
        Turn("assistant", NOTHING_FOUND),
        Turn("user", "yes please"),
    )
    assert text == NO_TICKET_TOOLS
    assert info_of(parts).entity_references == []


async def test_an_explicit_request_it_cannot_file_is_still_answered_from_the_articles(
    knowledge: KnowledgeBase,
) -> None:
    provider = LocalProvider(knowledge, token_delay_s=0, article_url=ARTICLE_URL)
    question = "I need to open a ticket about a problem and attach some screenshots"
    text, parts = await reply(provider, Turn("user", question))
    assert text.startswith(NO_TICKET_TOOLS)
    assert TICKET_OFFER not in text
    assert info_of(parts).entity_references[0]["id"] == "contact-support"


async def test_a_failing_tool_server_is_reported_and_the_reply_goes_on(
    knowledge: KnowledgeBase, broken_tools: ToolService
) -> None:
    provider = LocalProvider(
        knowledge, token_delay_s=0, article_url=ARTICLE_URL, tools=broken_tools
    )
    text, parts = await reply(provider, Turn("user", "please open a ticket"))
    calls = [p for p in parts if isinstance(p, ToolCall | ToolResult)]
    assert [type(p) for p in calls] == [ToolCall, ToolResult]
    assert calls[0].name == CREATE_TICKET
    assert calls[1] == ToolResult(CREATE_TICKET, False)
    assert text.startswith(TICKET_FAILED)
    assert not [r for r in info_of(parts).entity_references if r["type"] == "ticket"]


async def test_accepting_the_offer_opens_a_ticket_through_parleys_mcp_server(
    knowledge: KnowledgeBase, tools: ToolService, db: Database
) -> None:
    me = await new_user(db)
    conversation = await new_conversation(db, me)
    provider = LocalProvider(knowledge, token_delay_s=0, article_url=ARTICLE_URL, tools=tools)
    question = "my vase arrived broken"
    text, parts = await reply(
        provider,
        Turn("user", question),
        Turn("assistant", NOTHING_FOUND),
        Turn("user", "Yes please"),
        user_id=me,
        conversation_id=conversation.id,
    )
    call = next(p for p in parts if isinstance(p, ToolCall))
    assert call == ToolCall(
        CREATE_TICKET,
        {"subject": "My vase arrived broken", "description": question, "priority": "normal"},
    )
    assert ToolResult(CREATE_TICKET, True) in parts
    (ticket,), total = await select_tickets(db, me, offset=0, limit=5)
    assert total == 1
    assert (ticket.description, ticket.conversation_id) == (question, conversation.id)
    assert 'Ticket #1 for you: "My vase arrived broken"' in text
    info = info_of(parts)
    label = "Ticket #1: My vase arrived broken"
    assert info.entity_references == [{"type": "ticket", "id": str(ticket.id), "label": label}]
    assert info.entity_links == [{"title": label, "url": f"/api/v1/tickets/{ticket.id}"}]
