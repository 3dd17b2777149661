"""Conversations and their messages (routes 1–6 of the contract)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from quart import Blueprint, Response, request
from quart_schema import (
    document_response,
    security_scheme_blueprint,
    validate_querystring,
    validate_request,
)

from actors.wire import conversation_json, message_json
from chat import operations
from chat.auth import current_user, require_user
from chat.openapi import document_empty, document_headers
from chat.schemas import (
    ConversationData,
    ConversationFilter,
    ConversationResponse,
    Conversations,
    Error,
    MessageData,
    MessageFilter,
    MessageResponse,
    Messages,
    TitleData,
)
from chat.services import services

blueprint = Blueprint("conversations", __name__, url_prefix="/api/v1/chat/conversations")
security_scheme_blueprint(blueprint, [{"bearer": []}])

JSONDict = dict[str, Any]
IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "A retry with the same key returns the first answer and stores nothing new.",
    "schema": {
        "type": "string",
        "minLength": 1,
        "maxLength": operations.MAX_IDEMPOTENCY_KEY,
        "pattern": r"\S",
    },
}
PREFER = {
    "name": "Prefer",
    "in": "header",
    "required": False,
    "description": "`respond-async`: answer 202 once the message is stored.",
    "schema": {"type": "string", "examples": ["respond-async"]},
}


def idempotency_key() -> str | None:
    return operations.check_idempotency_key(request.headers.get("Idempotency-Key"))


@blueprint.get("")
@document_response(Conversations, 200)
@document_response(Error, 401)
@document_response(Error, 422)
@require_user
@validate_querystring(ConversationFilter)
async def get_conversations(query_args: ConversationFilter) -> JSONDict:
    """List my conversations, most recently active first."""
    return await operations.list_conversations(
        services(), current_user().id, offset=query_args.offset, limit=query_args.limit
    )


@blueprint.post("")
@document_response(ConversationResponse, 201)
@document_response(Error, 401)
@document_response(Error, 422)
@require_user
@validate_request(ConversationData)
async def post_conversation(data: ConversationData) -> tuple[JSONDict, int]:
    """Start a conversation; without a title it gets one from its first message."""
    conversation = await operations.create_conversation(services(), current_user().id, data.title)
    return conversation_json(conversation), 201


@blueprint.get("/<uuid:conversation_id>/messages")
@document_response(Messages, 200)
@document_response(Error, 401)
@document_response(Error, 404)
@document_response(Error, 422)
@require_user
@validate_querystring(MessageFilter)
async def get_messages(conversation_id: UUID, query_args: MessageFilter) -> JSONDict:
    """List a conversation's messages, oldest first."""
    return await operations.get_messages(
        services(),
        current_user().id,
        conversation_id,
        offset=query_args.offset,
        limit=query_args.limit,
    )


@blueprint.post("/<uuid:conversation_id>/messages")
@document_response(MessageResponse, 201)
@document_response(MessageResponse, 202)
@document_response(Error, 401)
@document_response(Error, 404)
@document_response(Error, 413)
@document_response(Error, 422)
@document_response(Error, 429)
@document_response(Error, 503)
@document_headers(IDEMPOTENCY_KEY, PREFER)
@require_user
@validate_request(MessageData)
async def post_message(conversation_id: UUID, data: MessageData) -> tuple[JSONDict, int]:
    """Send a message; answers 201 with the assistant's reply.

    The reply is generated without the streaming routes' reading pace
    (`ASSISTANT_TOKEN_DELAY_MS`): a synchronous caller waits only for the model. With
    `Prefer: respond-async` it answers 202 with the stored message at once, and the reply
    follows, paced, on the event streams. An `Idempotency-Key` header makes a retry return
    the first answer and store nothing new. Answers 429 (with `Retry-After`) when the user's
    message budget is spent or all their concurrent replies are taken.
    """
    respond_async = "respond-async" in request.headers.get("Prefer", "")
    command, accepted = await operations.send_message(
        services(),
        current_user().id,
        conversation_id,
        data.message,
        idempotency_key(),
        paced=respond_async,
    )
    if respond_async:
        return message_json(accepted.message), 202
    return message_json(await command.finished.wait()), 201


@blueprint.patch("/<uuid:conversation_id>/title")
@document_response(ConversationResponse, 200)
@document_response(Error, 401)
@document_response(Error, 404)
@document_response(Error, 422)
@require_user
@validate_request(TitleData)
async def patch_title(conversation_id: UUID, data: TitleData) -> JSONDict:
    """Rename a conversation; an automatic title never replaces this one."""
    conversation = await operations.rename_conversation(
        services(), current_user().id, conversation_id, data.title
    )
    return conversation_json(conversation)


@blueprint.delete("/<uuid:conversation_id>")
@document_empty(204)
@document_response(Error, 401)
@document_response(Error, 404)
@require_user
async def delete_conversation(conversation_id: UUID) -> Response:
    """Delete a conversation; it answers 404 everywhere from then on."""
    await operations.delete_conversation(services(), current_user().id, conversation_id)
    return Response(status=204)
