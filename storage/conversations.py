"""Conversations, always read and written on behalf of their owner (`user_id`)."""

from __future__ import annotations

import uuid
from datetime import timedelta

import sqlalchemy as sa
from databases import Database

from storage.compiled import Statement
from storage.errors import NotFound, integrity_errors
from storage.rows import Conversation, now, utc
from storage.tables import conversations, users

_live = conversations.c.deleted_at.is_(None)


def _owned(user_id: uuid.UUID, conversation_id: uuid.UUID) -> sa.ColumnElement[bool]:
    return sa.and_(conversations.c.id == conversation_id, conversations.c.user_id == user_id, _live)


# Every column but `fence`, which starts at its server default (0): see actors/lease.py.
_columns = [c for c in conversations.c if c.name != "fence"]
_insert_conversation = Statement(
    conversations.insert().values({c.name: sa.bindparam(c.name, type_=c.type) for c in _columns})
)
_count_change = Statement(
    sa.update(users)
    .where(users.c.id == sa.bindparam("user_id"))
    .values(total_conversations=users.c.total_conversations + sa.bindparam("change"))
)
# PostgreSQL: insert and count in one statement (one round trip instead of four); SQLite
# cannot put an UPDATE in a WITH, so it takes the transaction below.
_bump = (
    sa.update(users)
    .where(users.c.id == sa.bindparam("user_id"))
    .values(total_conversations=users.c.total_conversations + 1)
    .returning(users.c.id)
    .cte("bump")
)
_insert_counted = Statement(
    conversations.insert()
    .from_select(
        [c.name for c in _columns],
        sa.select(
            *[
                _bump.c.id if c.name == "user_id" else sa.bindparam(c.name, type_=c.type)
                for c in _columns
            ]
        ).select_from(_bump),
    )
    .add_cte(_bump)
    # Without a user row the CTE is empty and the INSERT writes nothing and raises nothing:
    # the returned id is how a missing user is told apart from success.
    .returning(conversations.c.id)
)
_total = (
    sa.select(users.c.total_conversations)
    .where(users.c.id == sa.bindparam("user_id"))
    .scalar_subquery()
)
_select_page = Statement(
    sa.select(conversations, _total.label("total"))
    .where(conversations.c.user_id == sa.bindparam("user_id"), _live)
    .order_by(conversations.c.updated_at.desc(), conversations.c.id)
    .offset(sa.bindparam("offset"))
    .limit(sa.bindparam("limit"))
)
_select_one = Statement(
    conversations.select().where(
        conversations.c.id == sa.bindparam("conversation_id"),
        conversations.c.user_id == sa.bindparam("user_id"),
        _live,
    )
)


async def insert_conversation(
    db: Database,
    *,
    user_id: uuid.UUID,
    title: str,
    title_set_by_user: bool,
    retention_days: int,
) -> Conversation:
    """Store a new conversation and count it; `NotFound` if the user does not exist."""
    conversation = Conversation.new(
        user_id=user_id,
        title=title,
        title_set_by_user=title_set_by_user,
        retention_days=retention_days,
    )
    values = {f: getattr(conversation, f) for f in Conversation.__slots__}
    with integrity_errors(conflict="conversation id", missing="user"):
        if db.url.dialect == "postgresql":
            if await _insert_counted.fetch_value(db, **values) is None:
                raise NotFound("user")
            return conversation
        async with db.transaction():
            await _insert_conversation.execute(db, **values)
            await _count_change.execute(db, user_id=user_id, change=1)
    return conversation


async def select_conversations(
    db: Database, user_id: uuid.UUID, *, offset: int, limit: int
) -> tuple[list[Conversation], int]:
    """One page, newest activity first, and the total; one query unless the page is empty.

    The total is the user's `total_conversations`, read in the same statement: counting the
    rows (a window count) made PostgreSQL visit all of a user's conversations on every page.
    """
    rows = await _select_page.fetch_all(db, user_id=user_id, offset=offset, limit=limit)
    if rows:
        return [Conversation.from_row(row) for row in rows], rows[0]["total"]
    # Past the end the total has no row to ride on.
    total = await db.fetch_val(sa.select(users.c.total_conversations).where(users.c.id == user_id))
    return [], int(total or 0)


async def select_conversation(
    db: Database, user_id: uuid.UUID, conversation_id: uuid.UUID
) -> Conversation | None:
    row = await _select_one.fetch_one(db, user_id=user_id, conversation_id=conversation_id)
    return None if row is None else Conversation.from_row(row)


async def update_conversation_title(
    db: Database,
    user_id: uuid.UUID,
    conversation_id: uuid.UUID,
    *,
    title: str,
    by_user: bool,
) -> Conversation | None:
    """Rename; an automatic title (`by_user=False`) never overwrites one the user chose."""
    where = _owned(user_id, conversation_id)
    if not by_user:
        where = sa.and_(where, conversations.c.title_set_by_user.is_(False))
    query = (
        sa.update(conversations)
        .where(where)
        .values(title=title, title_set_by_user=by_user, updated_at=now())
        .returning(*conversations.c)
    )
    row = await db.fetch_one(query)
    return None if row is None else Conversation.from_row(row)


async def soft_delete_conversation(
    db: Database, user_id: uuid.UUID, conversation_id: uuid.UUID
) -> Conversation | None:
    """Mark deleted; from then on every owner-scoped read treats it as missing."""
    at = now()
    query = (
        sa.update(conversations)
        .where(_owned(user_id, conversation_id))
        .values(deleted_at=at, updated_at=at)
        .returning(*conversations.c)
    )
    async with db.transaction():
        row = await db.fetch_one(query)
        if row is None:
            return None
        await _count_change.execute(db, user_id=user_id, change=-1)
    return Conversation.from_row(row)


async def purge_deleted_conversations(db: Database) -> int:
    """Remove soft-deleted conversations (and by cascade their messages) past their retention."""
    rows = await db.fetch_all(
        sa.select(
            conversations.c.id, conversations.c.deleted_at, conversations.c.retention_days
        ).where(conversations.c.deleted_at.is_not(None))
    )
    at = now()
    expired = [
        row["id"]
        for row in rows
        if utc(row["deleted_at"]) + timedelta(days=row["retention_days"]) <= at
    ]
    # One statement per row: `databases` does not apply the UUID bind processor to the
    # expanded parameters of an IN list on SQLite. Deletions are few and rare.
    for conversation_id in expired:
        await db.execute(sa.delete(conversations).where(conversations.c.id == conversation_id))
    return len(expired)
