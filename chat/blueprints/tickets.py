"""Support tickets, read by their owner (the assistant opens them through MCP tools)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from quart import Blueprint
from quart_schema import document_response, security_scheme_blueprint, validate_querystring

from chat import tickets
from chat.auth import current_user, require_user
from chat.schemas import Error, TicketDetail, TicketFilter, Tickets
from chat.services import services

blueprint = Blueprint("tickets", __name__, url_prefix="/api/v1/tickets")
security_scheme_blueprint(blueprint, [{"bearer": []}])

JSONDict = dict[str, Any]


@blueprint.get("")
@document_response(Tickets, 200)
@document_response(Error, 401)
@document_response(Error, 422)
@require_user
@validate_querystring(TicketFilter)
async def get_tickets(query_args: TicketFilter) -> JSONDict:
    """List my tickets, most recently updated first."""
    return await tickets.list_tickets(
        services().db,
        current_user().id,
        status=query_args.status,
        offset=query_args.offset,
        limit=query_args.limit,
    )


@blueprint.get("/<uuid:ticket_id>")
@document_response(TicketDetail, 200)
@document_response(Error, 401)
@document_response(Error, 404)
@require_user
async def get_ticket(ticket_id: UUID) -> JSONDict:
    """Read one of my tickets with its comments."""
    return await tickets.ticket_detail(services().db, current_user().id, ticket_id)
