"""Storage keeps its own contract, on SQLite and PostgreSQL: owner-scoped reads, the same
errors from both backends, and the reason a reply failed kept and returned."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from databases import Database
from quart.typing import TestClientProtocol as Client

from actors.wire import message_json
from chat.schemas import MessageResponse
from chat.services import Services
from storage.conversations import insert_conversation, soft_delete_conversation
from storage.errors import Conflict, NotFound
from storage.messages import (
    insert_message,
    select_message_by_key,
    select_recent_messages,
    select_reply,
)
from storage.rows import Conversation, Message
from storage.users import insert_user
from tests.conftest import Register, auth

pytestmark = pytest.mark.anyio
BASE = "/api/v1/chat/conversations"


async def new_user(db: Database) -> uuid.UUID:
    user = await insert_user(
        db, email=f"{uuid.uuid4().hex[:8]}@example.com", password_hash="x", display_name=None
    )
    return user.id


async def new_conversation(db: Database, user_id: uuid.UUID) -> Conversation:
    return await insert_conversation(
        db, user_id=user_id, title="t", title_set_by_user=True, retention_days=30
    )


def id_param(db: Database, value: uuid.UUID) -> str:
    """A UUID as the backend stores it, for hand-written SQL."""
    return value.hex if db.url.dialect == "sqlite" else str(value)


async def test_a_failed_reply_returns_its_error_through_rest(
    client: Client, register: Register, services: Services
) -> None:
    me = await register()
    response = await client.post(BASE, json={}, headers=auth(me))
    cid = uuid.UUID((await response.get_json())["id"])
    user_id = uuid.UUID(me["user_id"])
    await insert_message(
        services.db, user_id=user_id, conversation_id=cid, role="user", content="hi"
    )
    await insert_message(
        services.db,
        user_id=user_id,
        conversation_id=cid,
        role="assistant",
        content="Hello! I can",
        status="failed",
        error_code="upstream_truncated",
        error_detail="the model's answer was cut off",
    )

    response = await client.get(f"{BASE}/{cid}/messages", headers=auth(me))
    assert response.status_code == 200
    question, answer = (await response.get_json())["items"]
    assert question["error"] is None
    assert answer["status"] == "failed"
    assert answer["content"] == "Hello! I can"
    assert answer["error"] == {
        "code": "upstream_truncated",
        "detail": "the model's answer was cut off",
    }
    MessageResponse.model_validate(answer)


async def test_the_message_wire_shape_and_its_schema_agree(db: Database) -> None:
    user_id = await new_user(db)
    conversation = await new_conversation(db, user_id)
    message, _ = await insert_message(
        db,
        user_id=user_id,
        conversation_id=conversation.id,
        role="assistant",
        content="",
        status="failed",
        error_code="upstream_unreachable",
    )
    shape = message_json(message)
    assert set(shape) == set(MessageResponse.model_fields)
    assert shape["error"] == {"code": "upstream_unreachable", "detail": None}
    MessageResponse.model_validate(shape)


async def test_the_reply_to_a_question_is_the_message_after_it_only(db: Database) -> None:
    owner = await new_user(db)
    cid = (await new_conversation(db, owner)).id

    async def say(role: str, content: str) -> Message:
        message, _ = await insert_message(
            db, user_id=owner, conversation_id=cid, role=role, content=content
        )
        return message

    lost = await say("user", "first question; its reply was never stored")
    second = await say("user", "second question")
    answer = await say("assistant", "the answer to the second")
    # A retry of the first question must not be given the second question's answer.
    assert await select_reply(db, owner, cid, lost.seq) is None
    assert await select_reply(db, owner, cid, second.seq) == answer


async def test_message_reads_are_the_owners_only(db: Database) -> None:
    owner, stranger = await new_user(db), await new_user(db)
    conversation = await new_conversation(db, owner)
    cid = conversation.id
    question, _ = await insert_message(
        db, user_id=owner, conversation_id=cid, role="user", content="q", idempotency_key="k"
    )
    answer, _ = await insert_message(
        db, user_id=owner, conversation_id=cid, role="assistant", content="a"
    )

    assert await select_message_by_key(db, owner, cid, "k") == question
    assert await select_reply(db, owner, cid, question.seq) == answer
    assert await select_recent_messages(db, owner, cid, limit=10) == [question, answer]

    assert await select_message_by_key(db, stranger, cid, "k") is None
    assert await select_reply(db, stranger, cid, question.seq) is None
    assert await select_recent_messages(db, stranger, cid, limit=10) == []

    assert await soft_delete_conversation(db, owner, cid) is not None
    assert await select_message_by_key(db, owner, cid, "k") is None
    assert await select_reply(db, owner, cid, question.seq) is None
    assert await select_recent_messages(db, owner, cid, limit=10) == []


async def test_a_key_retried_on_a_deleted_conversation_is_not_found(db: Database) -> None:
    user_id = await new_user(db)
    cid = (await new_conversation(db, user_id)).id
    fields: dict[str, Any] = {"role": "user", "content": "q", "idempotency_key": "k"}
    await insert_message(db, user_id=user_id, conversation_id=cid, **fields)
    await soft_delete_conversation(db, user_id, cid)
    with pytest.raises(NotFound):
        await insert_message(db, user_id=user_id, conversation_id=cid, **fields)


async def test_a_key_is_the_owners_own(db: Database) -> None:
    """Another user's retry with the same key on the same conversation gets nothing back."""
    owner, stranger = await new_user(db), await new_user(db)
    cid = (await new_conversation(db, owner)).id
    fields: dict[str, Any] = {"role": "user", "content": "q", "idempotency_key": "k"}
    await insert_message(db, user_id=owner, conversation_id=cid, **fields)
    with pytest.raises(NotFound):
        await insert_message(db, user_id=stranger, conversation_id=cid, **fields)


async def test_a_conversation_for_a_missing_user_is_not_found(db: Database) -> None:
    """PostgreSQL used to insert nothing and report success (its INSERT … SELECT from the
    counting CTE had no user row to select); SQLite raised its own IntegrityError."""
    missing = uuid.uuid4()
    with pytest.raises(NotFound):
        await new_conversation(db, missing)
    assert await db.fetch_val("SELECT count(*) FROM conversations") == 0


async def test_a_conversation_for_a_deleted_user_is_not_found(db: Database) -> None:
    user_id = await new_user(db)
    await db.execute("DELETE FROM users WHERE id = :id", {"id": id_param(db, user_id)})
    with pytest.raises(NotFound):
        await new_conversation(db, user_id)


async def test_integrity_errors_map_the_same_on_both_backends(db: Database) -> None:
    user_id = await new_user(db)
    email = f"{uuid.uuid4().hex[:8]}@example.com"
    await insert_user(db, email=email, password_hash="x", display_name=None)
    with pytest.raises(Conflict):
        await insert_user(db, email=email.upper(), password_hash="x", display_name=None)

    cid = (await new_conversation(db, user_id)).id
    message_id = uuid.uuid4()
    fields: dict[str, Any] = {"role": "user", "content": "q", "message_id": message_id}
    await insert_message(db, user_id=user_id, conversation_id=cid, **fields)
    with pytest.raises(Conflict):
        await insert_message(db, user_id=user_id, conversation_id=cid, **fields)
    # The failed write changed nothing: the count still matches the rows.
    total = await db.fetch_val(
        "SELECT total_messages FROM conversations WHERE id = :id", {"id": id_param(db, cid)}
    )
    assert total == 1


@pytest.mark.parametrize("deleted_by", ["route", "elsewhere"])
async def test_a_retry_after_delete_answers_404(
    client: Client, register: Register, services: Services, deleted_by: str
) -> None:
    """Deleted through the route, or by another process (or between the route's checks):
    then this process's actor is still live and only the store can refuse the old answer."""
    me = await register()
    cid = (await (await client.post(BASE, json={}, headers=auth(me))).get_json())["id"]
    key = {"Idempotency-Key": "retry-after-delete"}
    url = f"{BASE}/{cid}/messages"
    first = await client.post(url, json={"message": "hi"}, headers=auth(me) | key)
    assert first.status_code == 201
    if deleted_by == "route":
        assert (await client.delete(f"{BASE}/{cid}", headers=auth(me))).status_code == 204
    else:
        user_id, conversation_id = uuid.UUID(me["user_id"]), uuid.UUID(cid)
        assert await soft_delete_conversation(services.db, user_id, conversation_id)
    retry = await client.post(url, json={"message": "hi"}, headers=auth(me) | key)
    assert retry.status_code == 404
    assert (await retry.get_json())["code"] == "not_found"


async def test_a_token_of_a_deleted_user_creates_no_conversation(
    client: Client, register: Register, services: Services
) -> None:
    """The signed-in user cache still vouches for a user deleted a moment ago; the insert
    itself must refuse (PostgreSQL answered 201 for a conversation it never stored)."""
    me = await register()
    assert (await client.get(BASE, headers=auth(me))).status_code == 200  # now cached
    db = services.db
    await db.execute(
        "DELETE FROM users WHERE id = :id", {"id": id_param(db, uuid.UUID(me["user_id"]))}
    )
    response = await client.post(BASE, json={"title": "ghost"}, headers=auth(me))
    assert response.status_code == 404
    assert await db.fetch_val("SELECT count(*) FROM conversations") == 0
