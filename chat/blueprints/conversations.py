"""Conversations and their messages (routes 1–6 of the contract)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import anyio
from quart import Blueprint, Response, request
from quart_schema import (
    document_response,
    security_scheme_blueprint,
    validate_querystring,
    validate_request,
)

from actors.commands import Accepted, PostMessage
from actors.wire import conversation_json, message_json
from chat.auth import current_user, require_user
from chat.errors import APIError, not_found
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
from storage.conversations import (
    insert_conversation,
    select_conversations,
    soft_delete_conversation,
    update_conversation_title,
)
from storage.messages import select_messages
from storage.rows import Conversation

blueprint = Blueprint("conversations", __name__, url_prefix="/api/v1/chat/conversations")
security_scheme_blueprint(blueprint, [{"bearer": []}])

DEFAULT_TITLE = "New conversation"
# How long a caller waits for a busy conversation's actor to take its message.
ACCEPT_DEADLINE_S = 30.0
MAX_IDEMPOTENCY_KEY = 200
JSONDict = dict[str, Any]
IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "A retry with the same key returns the first answer and stores nothing new.",
    "schema": {
        "type": "string",
        "minLength": 1,
        "maxLength": MAX_IDEMPOTENCY_KEY,
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


async def send_message(
    conversation_id: UUID, content: str, key: str | None, *, paced: bool = True
) -> tuple[PostMessage, Accepted]:
    """Deliver a message to the conversation's actor and wait until it is stored (routes 4, 7).

    `paced=False` lets the reply come as fast as the model gives it: nobody reads it token by
    token. 503 if storing takes longer than `ACCEPT_DEADLINE_S` (the actor is busy or the
    server is overloaded); the command may still be carried out, and a retry with the same
    `Idempotency-Key` then returns it.
    """
    try:
        with anyio.fail_after(ACCEPT_DEADLINE_S):
            command = await services().registry.post_message(
                current_user().id, conversation_id, content, key, paced=paced
            )
            return command, await command.accepted.wait()
    except TimeoutError:
        raise APIError(
            503, "unavailable", "The conversation is busy, try again", {"Retry-After": "1"}
        ) from None


def publish_change(type: str, conversation: Conversation) -> None:
    """Tell the conversation's subscribers (and its owner's) what became of it."""
    services().hub.publish(
        conversation.id,
        conversation.user_id,
        type,
        {"conversation": conversation_json(conversation)},
    )


def idempotency_key() -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    key = key.strip()
    if not key or len(key) > MAX_IDEMPOTENCY_KEY:
        raise APIError(
            422,
            "validation_error",
            f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} characters",
        )
    return key


@blueprint.get("")
@document_response(Conversations, 200)
@document_response(Error, 401)
@document_response(Error, 422)
@require_user
@validate_querystring(ConversationFilter)
async def get_conversations(query_args: ConversationFilter) -> JSONDict:
    """List my conversations, most recently active first."""
    items, total = await select_conversations(
        services().db, current_user().id, offset=query_args.offset, limit=query_args.limit
    )
    return {
        "items": [conversation_json(c) for c in items],
        "total": total,
        "offset": query_args.offset,
        "limit": query_args.limit,
    }


@blueprint.post("")
@document_response(ConversationResponse, 201)
@document_response(Error, 401)
@document_response(Error, 422)
@require_user
@validate_request(ConversationData)
async def post_conversation(data: ConversationData) -> tuple[JSONDict, int]:
    """Start a conversation; without a title it gets one from its first message."""
    found = services()
    conversation = await insert_conversation(
        found.db,
        user_id=current_user().id,
        title=data.title or DEFAULT_TITLE,
        title_set_by_user=bool(data.title),
        retention_days=found.settings.retention_days,
    )
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
    page = await select_messages(
        services().db,
        current_user().id,
        conversation_id,
        offset=query_args.offset,
        limit=query_args.limit,
    )
    if page is None:
        raise not_found()
    items, total = page
    return {
        "items": [message_json(m) for m in items],
        "total": total,
        "offset": query_args.offset,
        "limit": query_args.limit,
    }


@blueprint.post("/<uuid:conversation_id>/messages")
@document_response(MessageResponse, 201)
@document_response(MessageResponse, 202)
@document_response(Error, 401)
@document_response(Error, 404)
@document_response(Error, 413)
@document_response(Error, 422)
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
    the first answer and store nothing new.
    """
    respond_async = "respond-async" in request.headers.get("Prefer", "")
    command, accepted = await send_message(
        conversation_id, data.message, idempotency_key(), paced=respond_async
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
    conversation = await update_conversation_title(
        services().db, current_user().id, conversation_id, title=data.title, by_user=True
    )
    if conversation is None:
        raise not_found()
    services().registry.update_conversation(conversation)
    publish_change("conversation_updated", conversation)
    return conversation_json(conversation)


@blueprint.delete("/<uuid:conversation_id>")
@document_empty(204)
@document_response(Error, 401)
@document_response(Error, 404)
@require_user
async def delete_conversation(conversation_id: UUID) -> Response:
    """Delete a conversation; it answers 404 everywhere from then on."""
    found = services()
    conversation = await soft_delete_conversation(found.db, current_user().id, conversation_id)
    if conversation is None:
        raise not_found()
    found.registry.discard(conversation_id)
    publish_change("conversation_deleted", conversation)
    return Response(status=204)
