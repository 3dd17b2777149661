"""Messages of a conversation, numbered by `seq` from 1 with no gaps.

`seq` comes from the conversation's `total_messages`, bumped in the same statement as the
insert (PostgreSQL) or the same transaction (SQLite): the row lock that UPDATE takes
serialises concurrent writers on PostgreSQL, and SQLite has a single writer, so two messages
can never draw the same number.
"""

from __future__ import annotations

import uuid
from dataclasses import asdict, replace
from typing import Any

import sqlalchemy as sa
from databases import Database

from storage.compiled import Statement
from storage.errors import Conflict, Fenced, NotFound, integrity_errors
from storage.fences import fence_of
from storage.rows import Message, now
from storage.tables import conversations, messages

_bump_statement = (
    sa.update(conversations)
    .where(
        conversations.c.id == sa.bindparam("conversation_id"),
        conversations.c.user_id == sa.bindparam("user_id"),
        conversations.c.deleted_at.is_(None),
        # A stale lease holder (one that lost its lease while paused) writes nothing.
        conversations.c.fence <= sa.bindparam("fence", 0, type_=sa.BigInteger),
    )
    .values(
        total_messages=conversations.c.total_messages + 1,
        total_tokens_used=conversations.c.total_tokens_used + sa.bindparam("tokens_used"),
        updated_at=sa.bindparam("created_at"),
    )
    .returning(conversations.c.total_messages)
)
_bump = Statement(_bump_statement)
_insert = Statement(
    messages.insert().values({c.name: sa.bindparam(c.name, type_=c.type) for c in messages.c})
)
# PostgreSQL: number and insert in one statement, one round trip; SQLite cannot put an
# UPDATE in a WITH, so it runs the two in a transaction.
_numbered = _bump_statement.cte("numbered")
_insert_counted = Statement(
    messages.insert()
    .from_select(
        [c.name for c in messages.c],
        sa.select(
            *[
                _numbered.c.total_messages
                if c.name == "seq"
                else sa.bindparam(c.name, type_=c.type)
                for c in messages.c
            ]
        ).select_from(_numbered),
    )
    .add_cte(_numbered)
    .returning(messages.c.seq)
)


async def insert_message(
    db: Database,
    *,
    user_id: uuid.UUID,
    conversation_id: uuid.UUID,
    role: str,
    content: str,
    status: str = "complete",
    message_id: uuid.UUID | None = None,
    model_used: str | None = None,
    confidence_score: float | None = None,
    entity_references: list[dict[str, Any]] | None = None,
    entity_links: list[dict[str, Any]] | None = None,
    prompt_tokens: int | None = None,
    completion_tokens: int | None = None,
    idempotency_key: str | None = None,
    tokens_used: int = 0,
    error_code: str | None = None,
    error_detail: str | None = None,
    fence: int = 0,
) -> tuple[Message, bool]:
    """Store a message; returns it and whether it is new.

    `tokens_used` is added to the conversation's `total_tokens_used` in the same write. A
    failed reply keeps why in `error_code` and `error_detail`.

    With an `idempotency_key` already used in this conversation the first message is returned
    and nothing is written. `NotFound` if the conversation is not the user's live one, also
    for a retried key: a deleted conversation's old answers are not given out again.

    `fence` is the writer's fencing number (actors/lease.py): `Fenced`, and nothing written,
    if the conversation has a newer one.
    """
    if idempotency_key is not None:
        existing = await select_message_by_key(db, user_id, conversation_id, idempotency_key)
        if existing is not None:
            return existing, False
    message = Message(
        id=message_id or uuid.uuid4(),
        conversation_id=conversation_id,
        seq=0,
        role=role,
        content=content,
        status=status,
        model_used=model_used,
        confidence_score=confidence_score,
        entity_references=entity_references or [],
        entity_links=entity_links or [],
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        idempotency_key=idempotency_key,
        created_at=now(),
        error_code=error_code,
        error_detail=error_detail,
    )
    values = asdict(message) | {"user_id": user_id, "tokens_used": tokens_used, "fence": fence}
    try:
        with integrity_errors(conflict="idempotency key", missing="conversation"):
            if db.url.dialect == "postgresql":
                seq = await _insert_counted.fetch_value(db, **values)
            else:
                async with db.transaction():
                    seq = await _bump.fetch_value(db, **values)
                    if seq is not None:
                        await _insert.execute(db, **values | {"seq": seq})
    except Conflict:
        # A concurrent retry with the same key won the race; its message is the answer.
        if idempotency_key is None:
            raise
        existing = await select_message_by_key(db, user_id, conversation_id, idempotency_key)
        if existing is None:
            raise
        return existing, False
    if seq is None:
        if fence and (await fence_of(db, conversation_id) or 0) > fence:
            raise Fenced("conversation")
        raise NotFound("conversation")
    return replace(message, seq=seq), True


def _owned_messages(user_id: Any, conversation_id: Any) -> sa.Select[Any]:
    """The messages of a conversation, if it is the user's live one; none otherwise (ids or
    bind parameters)."""
    return (
        messages.select()
        .select_from(messages.join(conversations, messages.c.conversation_id == conversations.c.id))
        .where(
            conversations.c.id == conversation_id,
            conversations.c.user_id == user_id,
            conversations.c.deleted_at.is_(None),
        )
    )


async def select_message_by_key(
    db: Database, user_id: uuid.UUID, conversation_id: uuid.UUID, idempotency_key: str
) -> Message | None:
    """The message first stored with `idempotency_key` in the user's live conversation."""
    row = await db.fetch_one(
        _owned_messages(user_id, conversation_id).where(
            messages.c.idempotency_key == idempotency_key
        )
    )
    return None if row is None else Message.from_row(row)


async def select_reply(
    db: Database, user_id: uuid.UUID, conversation_id: uuid.UUID, after_seq: int
) -> Message | None:
    """The assistant's answer to the message numbered `after_seq`, once it is stored.

    The actor stores a reply right after its question, so the answer is the next message; a
    later assistant message answers a later question (the first reply was never stored).
    """
    row = await db.fetch_one(
        _owned_messages(user_id, conversation_id).where(
            messages.c.seq == after_seq + 1, messages.c.role == "assistant"
        )
    )
    return None if row is None else Message.from_row(row)


_select_page = Statement(
    sa.select(conversations.c.total_messages.label("total"), messages)
    .select_from(
        conversations.outerjoin(
            messages,
            sa.and_(
                messages.c.conversation_id == conversations.c.id,
                messages.c.seq > sa.bindparam("offset"),
                messages.c.seq <= sa.bindparam("upto"),
            ),
        )
    )
    .where(
        conversations.c.id == sa.bindparam("conversation_id"),
        conversations.c.user_id == sa.bindparam("user_id"),
        conversations.c.deleted_at.is_(None),
    )
    .order_by(messages.c.seq)
)


async def select_messages(
    db: Database, user_id: uuid.UUID, conversation_id: uuid.UUID, *, offset: int, limit: int
) -> tuple[list[Message], int] | None:
    """One page oldest first and the total, or `None` if the conversation is not the user's.

    Because `seq` runs 1..total with no gaps, a page is a `seq` range: one indexed query that
    also checks ownership and reads the total, with at least one row whenever the
    conversation exists.
    """
    rows = await _select_page.fetch_all(
        db, user_id=user_id, conversation_id=conversation_id, offset=offset, upto=offset + limit
    )
    if not rows:
        return None
    items = [Message.from_row(row) for row in rows if row["id"] is not None]
    return items, rows[0]["total"]


# Every actor start reads its history: compiled once (a burst of starts spent ~5 % of an
# instance's CPU compiling it through `databases`).
_select_recent = Statement(
    _owned_messages(sa.bindparam("user_id"), sa.bindparam("conversation_id"))
    .order_by(messages.c.seq.desc())
    .limit(sa.bindparam("limit", type_=sa.Integer))
)


async def select_recent_messages(
    db: Database, user_id: uuid.UUID, conversation_id: uuid.UUID, *, limit: int
) -> list[Message]:
    """The last `limit` messages, oldest first: an actor's working history."""
    rows = await _select_recent.fetch_all(
        db, user_id=user_id, conversation_id=conversation_id, limit=limit
    )
    return [Message.from_row(row) for row in reversed(rows)]
