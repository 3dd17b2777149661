"""Tickets in storage, on SQLite and PostgreSQL: numbered per user, always scoped to their
owner, paginated newest first, and kept when their conversation is purged."""

from __future__ import annotations

import uuid
from dataclasses import replace

import anyio
import pytest
import sqlalchemy as sa
from databases import Database

from storage.errors import NotFound
from storage.tables import conversations, ticket_comments, tickets, users
from storage.tickets import (
    Ticket,
    insert_ticket,
    insert_ticket_comment,
    select_ticket,
    select_ticket_by_number,
    select_ticket_comments,
    select_tickets,
)
from tests.test_storage import new_conversation, new_user

pytestmark = pytest.mark.anyio


async def open_ticket(
    db: Database,
    user_id: uuid.UUID,
    conversation_id: uuid.UUID | None = None,
    subject: str = "Refund",
    priority: str = "normal",
) -> Ticket:
    return await insert_ticket(
        db,
        user_id=user_id,
        conversation_id=conversation_id,
        subject=subject,
        description="Where is my refund?",
        priority=priority,
    )


async def count(db: Database, table: sa.Table) -> int:
    return int(await db.fetch_val(sa.select(sa.func.count()).select_from(table)))


async def test_numbers_count_per_user_from_one(db: Database) -> None:
    me, other = await new_user(db), await new_user(db)
    conversation = await new_conversation(db, me)
    first = await open_ticket(db, me, conversation.id)
    second = await open_ticket(db, me)
    theirs = await open_ticket(db, other)
    assert (first.number, second.number, theirs.number) == (1, 2, 1)
    assert first.status == "open"
    assert first.conversation_id == conversation.id
    assert await select_ticket(db, me, first.id) == first
    assert await select_ticket_by_number(db, me, 2) == second
    assert await select_ticket_by_number(db, other, 2) is None


async def test_concurrent_tickets_of_one_user_get_distinct_numbers(db: Database) -> None:
    me = await new_user(db)
    opened: list[Ticket] = []

    async def one() -> None:
        opened.append(await open_ticket(db, me))

    async with anyio.create_task_group() as group:
        for _ in range(6):
            group.start_soon(one)
    assert sorted(t.number for t in opened) == [1, 2, 3, 4, 5, 6]


async def test_another_users_ticket_is_missing_for_every_read_and_write(db: Database) -> None:
    me, other = await new_user(db), await new_user(db)
    theirs = await open_ticket(db, other)
    comment = await insert_ticket_comment(db, other, theirs.id, author="user", body="Any news?")
    theirs = replace(theirs, updated_at=comment.created_at)

    assert await select_ticket(db, me, theirs.id) is None
    assert await select_ticket_by_number(db, me, theirs.number) is None
    assert await select_ticket_comments(db, me, theirs.id) == []
    assert await select_tickets(db, me, offset=0, limit=10) == ([], 0)
    with pytest.raises(NotFound):
        await insert_ticket_comment(db, me, theirs.id, author="assistant", body="Closed!")
    with pytest.raises(NotFound):
        await insert_ticket_comment(db, me, uuid.uuid4(), author="assistant", body="Closed!")
    assert [c.body for c in await select_ticket_comments(db, other, theirs.id)] == ["Any news?"]
    assert await select_ticket(db, other, theirs.id) == theirs


async def test_a_ticket_from_another_users_conversation_is_refused_and_nothing_is_written(
    db: Database,
) -> None:
    me, other = await new_user(db), await new_user(db)
    theirs = await new_conversation(db, other)
    with pytest.raises(NotFound):
        await open_ticket(db, me, theirs.id)
    with pytest.raises(NotFound):
        await open_ticket(db, me, uuid.uuid4())
    with pytest.raises(NotFound):
        await open_ticket(db, uuid.uuid4())
    assert await count(db, tickets) == 0
    # No number was used up by the refused tickets.
    assert (await open_ticket(db, me)).number == 1


async def test_bad_priority_and_author_are_refused(db: Database) -> None:
    me = await new_user(db)
    with pytest.raises(ValueError, match="priority"):
        await open_ticket(db, me, priority="asap")
    ticket = await open_ticket(db, me)
    with pytest.raises(ValueError, match="author"):
        await insert_ticket_comment(db, me, ticket.id, author="admin", body="x")
    assert await count(db, tickets) == 1
    assert await count(db, ticket_comments) == 0


async def test_pages_newest_update_first_with_total_and_status_filter(db: Database) -> None:
    me = await new_user(db)
    opened = [await open_ticket(db, me, subject=f"T{i}") for i in range(5)]
    items, total = await select_tickets(db, me, offset=0, limit=2)
    assert total == 5
    assert [t.number for t in items] == [5, 4]
    items, total = await select_tickets(db, me, offset=4, limit=2)
    assert ([t.number for t in items], total) == ([1], 5)
    assert await select_tickets(db, me, offset=10, limit=2) == ([], 5)

    # A comment makes a ticket the most recently updated one.
    comment = await insert_ticket_comment(db, me, opened[1].id, author="user", body="More info")
    items, _ = await select_tickets(db, me, offset=0, limit=1)
    assert items[0].id == opened[1].id
    assert items[0].updated_at == comment.created_at

    await db.execute(sa.update(tickets).where(tickets.c.id == opened[2].id).values(status="closed"))
    closed, total = await select_tickets(db, me, status="closed", offset=0, limit=10)
    assert ([t.id for t in closed], total) == ([opened[2].id], 1)
    assert await select_tickets(db, me, status="pending", offset=0, limit=10) == ([], 0)


async def test_comments_come_oldest_first(db: Database) -> None:
    me = await new_user(db)
    ticket = await open_ticket(db, me)
    for body in ("one", "two", "three"):
        await insert_ticket_comment(db, me, ticket.id, author="assistant", body=body)
    comments = await select_ticket_comments(db, me, ticket.id)
    assert [c.body for c in comments] == ["one", "two", "three"]
    assert {c.author for c in comments} == {"assistant"}


async def test_a_ticket_outlives_its_purged_conversation_and_goes_with_its_user(
    db: Database,
) -> None:
    me = await new_user(db)
    conversation = await new_conversation(db, me)
    ticket = await open_ticket(db, me, conversation.id)
    await insert_ticket_comment(db, me, ticket.id, author="user", body="Hi")
    await db.execute(sa.delete(conversations).where(conversations.c.id == conversation.id))
    kept = await select_ticket(db, me, ticket.id)
    assert kept is not None
    assert kept.conversation_id is None

    await db.execute(sa.delete(users).where(users.c.id == me))
    assert await count(db, tickets) == 0
    assert await count(db, ticket_comments) == 0
