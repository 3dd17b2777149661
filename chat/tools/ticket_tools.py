"""The ticket tools of Parley's MCP server: create, list, read and comment on tickets.

Who a call acts for is never an argument: the tool service puts a short-lived signed token in
each request's `_meta` (`chat/tools/identity.py`), and every tool here verifies it before it
touches the database. No token, a forged or expired one → a tool error. Another user's ticket
is "not found", word for word as a missing one. A ticket opened here keeps the token's
conversation. The rules and the JSON are `chat/tickets.py`'s, shared with the REST routes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

import anyio
from databases import Database
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import Field

from chat import tickets
from chat.tools.identity import (
    ACTING_USER_META_KEY,
    ActingUser,
    InvalidActingToken,
    verify_acting_token,
)
from storage.database import create_database
from storage.errors import NotFound

if TYPE_CHECKING:
    from mcp.server.mcpserver import MCPServer

    from chat.settings import Settings

# What `list_tickets` returns at most: the most recently updated ones.
LIST_LIMIT = 20
# One tool server per Parley process, and a model calls tools one at a time or few at once:
# a small pool, beside the app's own.
POOL_SIZE = 3
Priority = Literal["low", "normal", "high", "urgent"]
Status = Literal["open", "pending", "resolved", "closed"]
TicketReference = Annotated[
    str | int,
    Field(description='The ticket\'s id, or its number as the customer quotes it: 12 or "#12".'),
]
NOT_AUTHORISED = "not authorised: this call does not say which customer it acts for"


class _Database:
    """The server's one database handle, connected on the first ticket call (a server that
    only searches articles never opens it)."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._db: Database | None = None
        self._lock = anyio.Lock()

    async def get(self) -> Database:
        async with self._lock:
            if self._db is None:
                db = create_database(self._url, pool_size=POOL_SIZE)
                await db.connect()
                self._db = db
            return self._db


def acting_user(ctx: Context[Any, Any], secret: str) -> ActingUser:
    """The verified user (and conversation) of this call, or a tool error."""
    meta = ctx.request_context.meta or {}
    token = meta.get(ACTING_USER_META_KEY)
    try:
        return verify_acting_token(secret, token if isinstance(token, str) else "")
    except InvalidActingToken:
        raise ToolError(NOT_AUTHORISED) from None


def _not_found(reference: object) -> ToolError:
    return ToolError(f"ticket {reference} not found")


def register(server: MCPServer, settings: Settings) -> None:
    """Add the ticket tools to Parley's MCP server (`chat/tools/server.py`)."""
    from chat.tools.server import tools_secret

    secret = tools_secret(settings)
    database = _Database(settings.database)

    @server.tool()
    async def create_ticket(
        subject: Annotated[
            str, Field(description="A short summary.", max_length=tickets.MAX_SUBJECT)
        ],
        description: Annotated[
            str,
            Field(
                description="What the customer needs, in their words.",
                max_length=tickets.MAX_DESCRIPTION,
            ),
        ],
        ctx: Context[Any, Any],
        priority: Priority = "normal",
    ) -> dict[str, Any]:
        """Open a support ticket for the customer, so someone from the support team follows
        up. Returns the ticket with its number ("Ticket #12") and URL."""
        acting = acting_user(ctx, secret)
        db = await database.get()
        try:
            ticket = await tickets.open_ticket(
                db,
                acting.user_id,
                acting.conversation_id,
                subject=subject,
                description=description,
                priority=priority,
            )
        except tickets.TicketInputError as error:
            raise ToolError(str(error)) from None
        except NotFound:
            raise ToolError("the conversation this call acts for no longer exists") from None
        return ticket | {"url": tickets.ticket_url(ticket["id"])}

    @server.tool()
    async def list_tickets(ctx: Context[Any, Any], status: Status | None = None) -> dict[str, Any]:
        """The customer's tickets (of one status, if given), most recently updated first."""
        acting = acting_user(ctx, secret)
        db = await database.get()
        page = await tickets.list_tickets(
            db, acting.user_id, status=status, offset=0, limit=LIST_LIMIT
        )
        return {"tickets": page["items"], "total": page["total"], "status": status}

    @server.tool()
    async def get_ticket(ticket_id: TicketReference, ctx: Context[Any, Any]) -> dict[str, Any]:
        """One of the customer's tickets with its comments, oldest first."""
        acting = acting_user(ctx, secret)
        db = await database.get()
        try:
            return await tickets.ticket_detail(db, acting.user_id, ticket_id)
        except tickets.TicketInputError as error:
            raise ToolError(str(error)) from None
        except NotFound:
            raise _not_found(ticket_id) from None

    @server.tool()
    async def add_ticket_comment(
        ticket_id: TicketReference,
        body: Annotated[
            str, Field(description="The comment's text.", max_length=tickets.MAX_COMMENT)
        ],
        ctx: Context[Any, Any],
    ) -> dict[str, Any]:
        """Add a comment to one of the customer's tickets (written by the assistant)."""
        acting = acting_user(ctx, secret)
        db = await database.get()
        try:
            return await tickets.comment_on_ticket(
                db, acting.user_id, ticket_id, body=body, author="assistant"
            )
        except tickets.TicketInputError as error:
            raise ToolError(str(error)) from None
        except NotFound:
            raise _not_found(ticket_id) from None
