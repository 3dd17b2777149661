"""The ticket tools of Parley's MCP server, run as a real subprocess (`parley mcp-server`) and
driven over stdio by the mcp SDK's client and by the tool service, on SQLite and PostgreSQL.

Whatever a caller sends as arguments, it reads and changes only the tickets of the user whose
signed acting token came with the call; without a valid token nothing is read or written.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import anyio
import mcp_types as types
import pytest
import sqlalchemy as sa
from databases import Database
from joserfc import jwt
from joserfc.jwk import OctKey
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client

from chat.settings import Settings
from chat.tools.config import parley_server
from chat.tools.identity import (
    ACTING_USER_META_KEY,
    derive_tools_secret,
    issue_acting_token,
)
from chat.tools.service import ToolService
from storage.tables import ticket_comments, tickets
from storage.tickets import insert_ticket, select_ticket, select_tickets
from tests.conftest import SECRET, make_settings
from tests.test_storage import new_conversation, new_user

pytestmark = pytest.mark.anyio
START_S = 30
# How the SDK words a tool error (`ToolError`) to the client.
PREFIX = "Error executing tool "


@pytest.fixture(name="settings")
def fixture_settings(tmp_path: Path, database_url: str) -> Settings:
    return make_settings(tmp_path, database_url)


@pytest.fixture(name="session")
async def fixture_session(settings: Settings) -> AsyncIterator[ClientSession]:
    """A session with Parley's MCP server in its own process, as the tool service starts it."""
    config = parley_server(settings)
    params = StdioServerParameters(
        command=config.command, args=list(config.args), env=config.env, cwd=config.cwd
    )
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        with anyio.fail_after(START_S):
            await session.initialize()
        yield session


@pytest.fixture(name="service")
async def fixture_service(settings: Settings) -> AsyncIterator[ToolService]:
    service = ToolService(
        [parley_server(settings)],
        tools_secret=derive_tools_secret(settings.jwt_secret),
        call_timeout_s=20,
    )
    async with anyio.create_task_group() as group:
        await group.start(service.run)
        try:
            yield service
        finally:
            await service.close()


def meta_for(token: str) -> types.RequestParamsMeta:
    return cast(types.RequestParamsMeta, {ACTING_USER_META_KEY: token})


def claims(user_id: uuid.UUID, conversation_id: uuid.UUID) -> dict[str, Any]:
    at = int(time.time())
    return {
        "sub": str(user_id),
        "cid": str(conversation_id),
        "iat": at,
        "exp": at + 60,
        "iss": "parley",
        "aud": "parley-mcp",
        "jti": uuid.uuid4().hex,
    }


def signed(payload: dict[str, Any]) -> str:
    key = OctKey.import_key(derive_tools_secret(SECRET))
    return jwt.encode({"alg": "HS256"}, payload, key)


def expired_token(user_id: uuid.UUID, conversation_id: uuid.UUID) -> str:
    payload = claims(user_id, conversation_id)
    return signed(payload | {"iat": payload["iat"] - 120, "exp": payload["iat"] - 60})


def token_for(user_id: uuid.UUID, conversation_id: uuid.UUID, **kwargs: Any) -> str:
    return issue_acting_token(derive_tools_secret(SECRET), user_id, conversation_id, **kwargs)


async def call(
    session: ClientSession, name: str, arguments: dict[str, Any], token: str | None
) -> types.CallToolResult:
    meta = None if token is None else meta_for(token)
    with anyio.fail_after(START_S):
        return await session.call_tool(name, arguments, meta=meta)


def text_of(result: types.CallToolResult) -> str:
    return " ".join(b.text for b in result.content if isinstance(b, types.TextContent))


async def count(db: Database, table: sa.Table) -> int:
    return int(await db.fetch_val(sa.select(sa.func.count()).select_from(table)))


async def test_the_tools_are_listed_with_their_argument_schemas(session: ClientSession) -> None:
    listed = {tool.name: tool for tool in (await session.list_tools()).tools}
    assert {"create_ticket", "list_tickets", "get_ticket", "add_ticket_comment"} <= set(listed)
    create = listed["create_ticket"].input_schema
    assert set(create["required"]) == {"subject", "description"}
    assert create["properties"]["subject"]["maxLength"] == 200
    assert create["properties"]["priority"]["enum"] == ["low", "normal", "high", "urgent"]
    # Who the call acts for is not among the arguments a model can fill in.
    for tool in listed.values():
        assert not {"user_id", "user", "owner"} & set(tool.input_schema.get("properties", {}))


async def test_create_read_list_and_comment_as_the_acting_user(
    session: ClientSession, db: Database
) -> None:
    me = await new_user(db)
    conversation = await new_conversation(db, me)
    token = token_for(me, conversation.id)

    created = await call(
        session,
        "create_ticket",
        {"subject": "Refund", "description": "Where is my refund?", "priority": "high"},
        token,
    )
    assert not created.is_error, text_of(created)
    ticket = created.structured_content
    assert ticket is not None
    assert (ticket["number"], ticket["status"], ticket["priority"]) == (1, "open", "high")
    assert ticket["conversation_id"] == str(conversation.id)
    assert ticket["url"] == f"/api/v1/tickets/{ticket['id']}"

    commented = await call(
        session, "add_ticket_comment", {"ticket_id": "#1", "body": "Order 1234"}, token
    )
    assert not commented.is_error, text_of(commented)
    assert commented.structured_content is not None
    assert commented.structured_content["author"] == "assistant"

    for reference in (ticket["id"], 1, "1", "Ticket #1"):
        read = await call(session, "get_ticket", {"ticket_id": reference}, token)
        assert not read.is_error, (reference, text_of(read))
        assert read.structured_content is not None
        assert read.structured_content["subject"] == "Refund"
        assert [c["body"] for c in read.structured_content["comments"]] == ["Order 1234"]

    listed = await call(session, "list_tickets", {}, token)
    assert listed.structured_content is not None
    assert [t["number"] for t in listed.structured_content["tickets"]] == [1]
    listed = await call(session, "list_tickets", {"status": "closed"}, token)
    assert listed.structured_content is not None
    assert listed.structured_content["tickets"] == []


async def test_without_a_valid_acting_token_nothing_is_read_or_written(
    session: ClientSession, db: Database
) -> None:
    me = await new_user(db)
    conversation = await new_conversation(db, me)
    mine = await insert_ticket(
        db,
        user_id=me,
        conversation_id=conversation.id,
        subject="Private",
        description="Mine",
        priority="normal",
    )
    bad_tokens = {
        "absent": None,
        "empty": "",
        "not a token": "not-a-token",
        "another deployment's": issue_acting_token("another secret", me, conversation.id),
        # An API token's secret is not the tools secret: the JWT secret signs nothing here.
        "signed with the JWT secret": issue_acting_token(SECRET, me, conversation.id),
        "expired": expired_token(me, conversation.id),
        "for another audience": signed(claims(me, conversation.id) | {"aud": "parley"}),
        "without a conversation": signed(
            {k: v for k, v in claims(me, conversation.id).items() if k != "cid"}
        ),
    }

    calls = [
        ("create_ticket", {"subject": "Sneaky", "description": "x"}),
        ("list_tickets", {}),
        ("get_ticket", {"ticket_id": str(mine.id)}),
        ("add_ticket_comment", {"ticket_id": str(mine.id), "body": "x"}),
    ]
    for kind, token in bad_tokens.items():
        for name, arguments in calls:
            result = await call(session, name, arguments, token)
            assert result.is_error, (kind, name)
            assert "not authorised" in text_of(result), (kind, name)
            assert "Private" not in text_of(result)
    assert await count(db, tickets) == 1
    assert await count(db, ticket_comments) == 0


async def test_another_users_ticket_is_not_found_exactly_like_a_missing_one(
    service: ToolService, db: Database
) -> None:
    """Through the tool service, which signs the token for the conversation's owner: the ids a
    model passes cannot reach another user's tickets."""
    me, other = await new_user(db), await new_user(db)
    mine, theirs = await new_conversation(db, me), await new_conversation(db, other)
    their_ticket = await insert_ticket(
        db,
        user_id=other,
        conversation_id=theirs.id,
        subject="Their secret",
        description="Theirs",
        priority="urgent",
    )
    missing = uuid.uuid4()

    async def as_me(name: str, arguments: dict[str, Any]) -> Any:
        return await service.call(f"parley__{name}", arguments, user_id=me, conversation_id=mine.id)

    for reference in (str(their_ticket.id), their_ticket.number, f"#{their_ticket.number}"):
        outcome = await as_me("get_ticket", {"ticket_id": reference})
        assert not outcome.ok
        assert outcome.text == f"{PREFIX}get_ticket: ticket {reference} not found"
        outcome = await as_me("add_ticket_comment", {"ticket_id": reference, "body": "mine now"})
        assert not outcome.ok
        assert outcome.text == f"{PREFIX}add_ticket_comment: ticket {reference} not found"
    outcome = await as_me("get_ticket", {"ticket_id": str(missing)})
    assert (outcome.ok, outcome.text) == (False, f"{PREFIX}get_ticket: ticket {missing} not found")

    outcome = await as_me("list_tickets", {})
    assert outcome.ok and outcome.data == {"tickets": [], "total": 0, "status": None}
    assert await count(db, ticket_comments) == 0

    # Arguments that name another user or conversation are not the tools' arguments: they
    # are dropped, and the ticket is mine, numbered from 1, keeping my conversation.
    outcome = await as_me(
        "create_ticket",
        {
            "subject": "Mine",
            "description": "Hello",
            "user_id": str(other),
            "conversation_id": str(theirs.id),
        },
    )
    assert outcome.ok, outcome.text
    assert outcome.data["number"] == 1
    assert outcome.data["conversation_id"] == str(mine.id)
    assert await select_tickets(db, me, offset=0, limit=5) == (
        [await select_ticket(db, me, uuid.UUID(outcome.data["id"]))],
        1,
    )
    assert await select_tickets(db, other, offset=0, limit=5) == ([their_ticket], 1)


async def test_bad_arguments_are_clear_tool_errors_and_write_nothing(
    session: ClientSession, db: Database
) -> None:
    me = await new_user(db)
    conversation = await new_conversation(db, me)
    token = token_for(me, conversation.id)
    cases = [
        ({"subject": "", "description": "x"}, "subject must not be blank"),
        ({"subject": "   ", "description": "x"}, "subject must not be blank"),
        ({"subject": "s" * 201, "description": "x"}, "200"),
        ({"subject": "s", "description": "d" * 10_001}, "10000"),
        ({"subject": "s", "description": "x", "priority": "asap"}, "priority"),
        ({"subject": "s"}, "description"),
    ]
    for arguments, message in cases:
        result = await call(session, "create_ticket", arguments, token)
        assert result.is_error, arguments
        assert message in text_of(result), (arguments, text_of(result))
    for huge in (2**31, 10**30, -1, 0):
        result = await call(session, "get_ticket", {"ticket_id": huge}, token)
        assert text_of(result).endswith(f"ticket {huge} not found"), text_of(result)
    result = await call(session, "get_ticket", {"ticket_id": "my refund one"}, token)
    assert result.is_error
    assert "ticket_id must be a ticket's id or its number" in text_of(result)
    result = await call(session, "add_ticket_comment", {"ticket_id": 1, "body": " "}, token)
    assert "body must not be blank" in text_of(result)
    assert await count(db, tickets) == 0
