"""Fencing of message writes (`conversations.fence`, revision 0003) on both backends."""

from __future__ import annotations

import uuid

import pytest
from databases import Database

from storage.errors import Fenced, NotFound
from storage.fences import fence_of, raise_fence
from storage.messages import insert_message, select_recent_messages
from tests.test_storage import new_conversation, new_user

pytestmark = pytest.mark.anyio


async def test_a_write_under_an_older_fence_is_refused_and_stores_nothing(db: Database) -> None:
    user_id = await new_user(db)
    conversation = await new_conversation(db, user_id)
    cid = conversation.id
    assert await fence_of(db, cid) == 0
    await raise_fence(db, cid, 3)
    message, new = await insert_message(
        db, user_id=user_id, conversation_id=cid, role="user", content="hi", fence=3
    )
    assert new and message.seq == 1
    # The next holder's claim moves the fence on; a lower number never moves it back.
    assert await raise_fence(db, cid, 4) == 4
    assert await raise_fence(db, cid, 2) == 4
    assert await fence_of(db, cid) == 4
    assert await raise_fence(db, uuid.uuid4(), 1) is None
    with pytest.raises(Fenced):
        await insert_message(
            db, user_id=user_id, conversation_id=cid, role="assistant", content="late", fence=3
        )
    reply, _ = await insert_message(
        db, user_id=user_id, conversation_id=cid, role="assistant", content="ok", fence=4
    )
    assert reply.seq == 2
    assert [m.content for m in await select_recent_messages(db, user_id, cid, limit=10)] == [
        "hi",
        "ok",
    ]


async def test_without_a_lease_writes_are_not_fenced_and_a_missing_conversation_is_not_found(
    db: Database,
) -> None:
    user_id = await new_user(db)
    conversation = await new_conversation(db, user_id)
    # No REDIS_URL: the fence stays 0 and writes carry none.
    _, new = await insert_message(
        db, user_id=user_id, conversation_id=conversation.id, role="user", content="hi"
    )
    assert new
    with pytest.raises(NotFound):
        # A conversation that does not exist is not mistaken for a fenced one.
        await insert_message(
            db, user_id=user_id, conversation_id=uuid.uuid4(), role="user", content="x", fence=5
        )
