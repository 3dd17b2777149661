"""What a user (or the assistant acting for them) can do with tickets, once, for every door.

The REST routes (`chat/blueprints/tickets.py`) and Parley's MCP server (`chat/tools/`) both
call these, so a ticket reads the same JSON everywhere and the same limits hold. Each function
takes the database and the acting user's id: the MCP server runs in its own process with its
own database handle, and the user comes from a verified token, never from a tool argument.
"""

from __future__ import annotations

import re
from typing import Any
from uuid import UUID

from databases import Database

from storage.errors import NotFound
from storage.tickets import (
    TICKET_PRIORITIES,
    Ticket,
    TicketComment,
    insert_ticket,
    insert_ticket_comment,
    select_ticket,
    select_ticket_by_number,
    select_ticket_comments,
    select_tickets,
)

JSONDict = dict[str, Any]
MAX_SUBJECT = 200
MAX_DESCRIPTION = 10_000
MAX_COMMENT = 10_000
DEFAULT_PRIORITY = "normal"
MAX_NUMBER = 2**31 - 1
# "12", "#12", "Ticket #12": how people (and models) quote a ticket's number.
_NUMBER = re.compile(r"^\s*(?:ticket\s*)?#?\s*(\d{1,9})\s*$", re.IGNORECASE)


class TicketInputError(ValueError):
    """An argument is out of bounds; the message says which and why."""


def ticket_json(ticket: Ticket) -> JSONDict:
    return {
        "id": str(ticket.id),
        "number": ticket.number,
        "subject": ticket.subject,
        "description": ticket.description,
        "priority": ticket.priority,
        "status": ticket.status,
        "conversation_id": None if ticket.conversation_id is None else str(ticket.conversation_id),
        "created_at": ticket.created_at.isoformat(),
        "updated_at": ticket.updated_at.isoformat(),
    }


def comment_json(comment: TicketComment) -> JSONDict:
    return {
        "id": str(comment.id),
        "author": comment.author,
        "body": comment.body,
        "created_at": comment.created_at.isoformat(),
    }


def ticket_label(ticket: Ticket | JSONDict) -> str:
    """How a reply names a ticket: `Ticket #12: Refund not received`."""
    number = ticket["number"] if isinstance(ticket, dict) else ticket.number
    subject = ticket["subject"] if isinstance(ticket, dict) else ticket.subject
    return f"Ticket #{number}: {subject}"


def ticket_url(ticket_id: UUID | str) -> str:
    return f"/api/v1/tickets/{ticket_id}"


def _text(name: str, value: Any, limit: int) -> str:
    if not isinstance(value, str):
        raise TicketInputError(f"{name} must be a string")
    text = value.strip()
    if not text:
        raise TicketInputError(f"{name} must not be blank")
    if len(text) > limit:
        raise TicketInputError(f"{name} must be at most {limit} characters")
    if "\x00" in text:
        raise TicketInputError(f"{name} must not contain NUL characters")
    return text


def check_priority(value: Any) -> str:
    if value is None or value == "":
        return DEFAULT_PRIORITY
    if not isinstance(value, str) or value.strip().lower() not in TICKET_PRIORITIES:
        raise TicketInputError(f"priority must be one of: {', '.join(TICKET_PRIORITIES)}")
    return value.strip().lower()


async def open_ticket(
    db: Database,
    user_id: UUID,
    conversation_id: UUID | None,
    *,
    subject: Any,
    description: Any,
    priority: Any = DEFAULT_PRIORITY,
) -> JSONDict:
    """Open a ticket for the user; `TicketInputError` for a bad argument."""
    ticket = await insert_ticket(
        db,
        user_id=user_id,
        conversation_id=conversation_id,
        subject=_text("subject", subject, MAX_SUBJECT),
        description=_text("description", description, MAX_DESCRIPTION),
        priority=check_priority(priority),
    )
    return ticket_json(ticket)


async def list_tickets(
    db: Database, user_id: UUID, *, status: str | None, offset: int, limit: int
) -> JSONDict:
    """One page of the user's tickets, most recently updated first."""
    items, total = await select_tickets(db, user_id, status=status, offset=offset, limit=limit)
    return {
        "items": [ticket_json(t) for t in items],
        "total": total,
        "offset": offset,
        "limit": limit,
    }


async def find_ticket(db: Database, user_id: UUID, reference: Any) -> Ticket:
    """The user's ticket by id or by number ("12", "#12"); `NotFound` for a missing one and,
    alike, for another user's."""
    if isinstance(reference, int) and not isinstance(reference, bool):
        # Numbers are 32-bit on both backends: a larger one matches no ticket.
        in_range = 0 < reference <= MAX_NUMBER
        found = await select_ticket_by_number(db, user_id, reference) if in_range else None
    elif isinstance(reference, str) and (number := _NUMBER.match(reference)):
        found = await select_ticket_by_number(db, user_id, int(number.group(1)))
    else:
        try:
            ticket_id = UUID(str(reference).strip())
        except ValueError:
            raise TicketInputError("ticket_id must be a ticket's id or its number") from None
        found = await select_ticket(db, user_id, ticket_id)
    if found is None:
        raise NotFound("ticket")
    return found


async def ticket_detail(db: Database, user_id: UUID, reference: Any) -> JSONDict:
    """The user's ticket with its comments, oldest first; `NotFound` as `find_ticket`."""
    ticket = await find_ticket(db, user_id, reference)
    comments = await select_ticket_comments(db, user_id, ticket.id)
    return ticket_json(ticket) | {"comments": [comment_json(c) for c in comments]}


async def comment_on_ticket(
    db: Database, user_id: UUID, reference: Any, *, body: Any, author: str
) -> JSONDict:
    """Add a comment to the user's ticket; `NotFound` as `find_ticket`."""
    text = _text("body", body, MAX_COMMENT)
    ticket = await find_ticket(db, user_id, reference)
    comment = await insert_ticket_comment(db, user_id, ticket.id, author=author, body=text)
    return comment_json(comment) | {"ticket_id": str(ticket.id), "ticket_number": ticket.number}
