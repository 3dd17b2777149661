"""Support tickets and their comments, always read and written on behalf of their owner.

A ticket's `number` is the one its owner quotes ("Ticket #12"): `users.tickets_opened` is
bumped in the same transaction as the insert, so on PostgreSQL the row lock of that UPDATE
serialises a user's concurrent tickets, and SQLite has a single writer. Numbers are per user,
so they say nothing about how many tickets other users opened.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from databases import Database

from storage.errors import NotFound, integrity_errors
from storage.rows import as_uuid, now, utc
from storage.tables import (
    COMMENT_AUTHORS,
    TICKET_PRIORITIES,
    TICKET_STATUSES,
    conversations,
    ticket_comments,
    tickets,
    users,
)

__all__ = [
    "COMMENT_AUTHORS",
    "TICKET_PRIORITIES",
    "TICKET_STATUSES",
    "Ticket",
    "TicketComment",
    "insert_ticket",
    "insert_ticket_comment",
    "select_ticket",
    "select_ticket_by_number",
    "select_ticket_comments",
    "select_tickets",
]


@dataclass(frozen=True, slots=True)
class Ticket:
    id: uuid.UUID
    user_id: uuid.UUID
    number: int
    conversation_id: uuid.UUID | None
    subject: str
    description: str
    priority: str
    status: str
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_row(cls, row: Any) -> Ticket:
        conversation_id = row["conversation_id"]
        return cls(
            id=as_uuid(row["id"]),
            user_id=as_uuid(row["user_id"]),
            number=row["number"],
            conversation_id=None if conversation_id is None else as_uuid(conversation_id),
            subject=row["subject"],
            description=row["description"],
            priority=row["priority"],
            status=row["status"],
            created_at=utc(row["created_at"]),
            updated_at=utc(row["updated_at"]),
        )


@dataclass(frozen=True, slots=True)
class TicketComment:
    id: uuid.UUID
    ticket_id: uuid.UUID
    author: str
    body: str
    created_at: datetime

    @classmethod
    def from_row(cls, row: Any) -> TicketComment:
        return cls(
            id=as_uuid(row["id"]),
            ticket_id=as_uuid(row["ticket_id"]),
            author=row["author"],
            body=row["body"],
            created_at=utc(row["created_at"]),
        )


def _mine(user_id: uuid.UUID) -> sa.ColumnElement[bool]:
    return tickets.c.user_id == user_id


async def insert_ticket(
    db: Database,
    *,
    user_id: uuid.UUID,
    conversation_id: uuid.UUID | None,
    subject: str,
    description: str,
    priority: str,
) -> Ticket:
    """Open a ticket with the user's next number; `NotFound` if the user does not exist or the
    conversation is not theirs (a deleted one still counts: the ticket keeps where it came
    from). `ValueError` for a priority outside `TICKET_PRIORITIES`."""
    if priority not in TICKET_PRIORITIES:
        raise ValueError(f"priority must be one of {', '.join(TICKET_PRIORITIES)}")
    at = now()
    async with db.transaction():
        if conversation_id is not None:
            owner = await db.fetch_val(
                sa.select(conversations.c.user_id).where(conversations.c.id == conversation_id)
            )
            if owner is None or as_uuid(owner) != user_id:
                raise NotFound("conversation")
        number = await db.fetch_val(
            sa.update(users)
            .where(users.c.id == user_id)
            .values(tickets_opened=users.c.tickets_opened + 1)
            .returning(users.c.tickets_opened)
        )
        if number is None:
            raise NotFound("user")
        ticket = Ticket(
            id=uuid.uuid4(),
            user_id=user_id,
            number=number,
            conversation_id=conversation_id,
            subject=subject,
            description=description,
            priority=priority,
            status="open",
            created_at=at,
            updated_at=at,
        )
        with integrity_errors(conflict="ticket number", missing="user or conversation"):
            await db.execute(
                tickets.insert().values({f: getattr(ticket, f) for f in Ticket.__slots__})
            )
    return ticket


async def select_tickets(
    db: Database, user_id: uuid.UUID, *, status: str | None = None, offset: int, limit: int
) -> tuple[list[Ticket], int]:
    """One page of the user's tickets (of one status, if given), most recently updated first,
    and how many there are."""
    where = _mine(user_id)
    if status is not None:
        where = sa.and_(where, tickets.c.status == status)
    rows = await db.fetch_all(
        tickets.select()
        .where(where)
        .order_by(tickets.c.updated_at.desc(), tickets.c.number.desc())
        .offset(offset)
        .limit(limit)
    )
    total = await db.fetch_val(sa.select(sa.func.count()).select_from(tickets).where(where))
    return [Ticket.from_row(row) for row in rows], int(total or 0)


async def select_ticket(db: Database, user_id: uuid.UUID, ticket_id: uuid.UUID) -> Ticket | None:
    """The user's ticket, or `None` when it does not exist or is another user's."""
    row = await db.fetch_one(tickets.select().where(_mine(user_id), tickets.c.id == ticket_id))
    return None if row is None else Ticket.from_row(row)


async def select_ticket_by_number(db: Database, user_id: uuid.UUID, number: int) -> Ticket | None:
    """The user's ticket with that number ("Ticket #12"), or `None`."""
    row = await db.fetch_one(tickets.select().where(_mine(user_id), tickets.c.number == number))
    return None if row is None else Ticket.from_row(row)


async def select_ticket_comments(
    db: Database, user_id: uuid.UUID, ticket_id: uuid.UUID
) -> list[TicketComment]:
    """The comments of the user's ticket, oldest first (none for another user's ticket)."""
    rows = await db.fetch_all(
        ticket_comments.select()
        .join_from(ticket_comments, tickets, ticket_comments.c.ticket_id == tickets.c.id)
        .where(_mine(user_id), tickets.c.id == ticket_id)
        .order_by(ticket_comments.c.created_at, ticket_comments.c.id)
    )
    return [TicketComment.from_row(row) for row in rows]


async def insert_ticket_comment(
    db: Database, user_id: uuid.UUID, ticket_id: uuid.UUID, *, author: str, body: str
) -> TicketComment:
    """Add a comment to the user's ticket and mark the ticket updated; `NotFound` when the
    ticket does not exist or is another user's. `ValueError` for an unknown author."""
    if author not in COMMENT_AUTHORS:
        raise ValueError(f"author must be one of {', '.join(COMMENT_AUTHORS)}")
    comment = TicketComment(
        id=uuid.uuid4(), ticket_id=ticket_id, author=author, body=body, created_at=now()
    )
    async with db.transaction():
        touched = await db.fetch_val(
            sa.update(tickets)
            .where(_mine(user_id), tickets.c.id == ticket_id)
            .values(updated_at=comment.created_at)
            .returning(tickets.c.id)
        )
        if touched is None:
            raise NotFound("ticket")
        with integrity_errors(conflict="comment id", missing="ticket"):
            await db.execute(
                ticket_comments.insert().values(
                    {f: getattr(comment, f) for f in TicketComment.__slots__}
                )
            )
    return comment
