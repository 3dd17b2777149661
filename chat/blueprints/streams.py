"""Live events over SSE (routes 7–9): send-and-stream, subscribe with replay, cancel."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from uuid import UUID

from quart import Blueprint, Response, request
from quart_schema import document_response, security_scheme_blueprint, validate_querystring

from actors.hub import Subscription
from actors.wire import message_json
from chat import operations
from chat.auth import current_user, require_user
from chat.blueprints.conversations import IDEMPOTENCY_KEY, idempotency_key
from chat.errors import APIError
from chat.openapi import document_headers
from chat.schemas import CancelResult, Error, EventStream, StreamFilter
from chat.services import services
from chat.sse import OPENED, data_frame, relay, sse_response
from storage.rows import Message

blueprint = Blueprint("streams", __name__, url_prefix="/api/v1/chat/conversations")
security_scheme_blueprint(blueprint, [{"bearer": []}])


LAST_EVENT_ID = {
    "name": "Last-Event-ID",
    "in": "header",
    "required": False,
    "description": "`<epoch>:<seq>`: replay the retained events after it (else `reset` first).",
    "schema": {"type": "string"},
}


@blueprint.get("/<uuid:conversation_id>/stream")
@document_response(EventStream, 200)
@document_response(Error, 401)
@document_response(Error, 404)
@document_response(Error, 422)
@document_response(Error, 503)
@document_headers(IDEMPOTENCY_KEY)
@require_user
@validate_querystring(StreamFilter)
async def get_stream(conversation_id: UUID, query_args: StreamFilter) -> Response:
    """Send a message and stream the reply as Server-Sent Events.

    The stream carries every event of the conversation from the moment of sending and ends
    after the reply's `complete`, `cancelled` or `error` event.
    """
    found = services()
    # Subscribed before sending, so not even the stored-message event can be missed. Sending
    # checks ownership (404), and then the subscription is dropped unread.
    subscription = found.hub.subscribe(conversation_id)
    try:
        command, accepted = await operations.send_message(
            found, current_user().id, conversation_id, query_args.message, idempotency_key()
        )
    except APIError as error:
        subscription.close()
        if error.code != "rate_limited":
            raise
        return _refused(conversation_id, error)
    except BaseException:
        subscription.close()
        raise

    async def frames() -> AsyncIterator[bytes]:
        with subscription:
            if accepted.duplicate:
                # A retry: the first answer, as it was stored (no ids: nothing new happened).
                yield OPENED
                yield data_frame(_frame("message", conversation_id, accepted.message))
                reply = await command.finished.wait()
                yield data_frame(_frame("complete", conversation_id, reply))
                return
            async for frame in relay(subscription, until_reply=str(accepted.reply_id)):
                yield frame

    return sse_response(frames())


def _refused(conversation_id: UUID, error: APIError) -> Response:
    """The message was refused (over the user's limits): a stream of one `error` event, so
    that an `EventSource`, which cannot read an error answer's body, learns why."""
    retry_after = (error.headers or {}).get("Retry-After", "1")
    body = {
        "type": "error",
        "conversation_id": str(conversation_id),
        "error": error.detail,
        "code": error.code,
        "retry_after": float(retry_after),
    }

    async def frames() -> AsyncIterator[bytes]:
        yield OPENED
        yield data_frame(json.dumps(body, separators=(",", ":")).encode())

    response = sse_response(frames())
    response.headers["Retry-After"] = retry_after
    return response


def _frame(type: str, conversation_id: UUID, message: Message) -> bytes:
    """An unnumbered event for a retried request: it replays stored facts, nothing new."""
    body = {"type": type, "conversation_id": str(conversation_id), "message": message_json(message)}
    return json.dumps(body, separators=(",", ":")).encode()


@blueprint.get("/<uuid:conversation_id>/events")
@document_response(EventStream, 200)
@document_response(Error, 401)
@document_response(Error, 404)
@document_headers(LAST_EVENT_ID)
@require_user
async def get_events(conversation_id: UUID) -> Response:
    """Subscribe to a conversation's events as Server-Sent Events.

    With a `Last-Event-ID: <epoch>:<seq>` header the retained events after that position come
    first; a position that cannot be honoured gets a `reset` event (reload the messages).
    """
    found = services()
    since = operations.parse_position(request.headers.get("Last-Event-ID"))
    subscription = Subscription(found.hub, conversation_id, found.hub.limits.queue_size)
    await operations.follow(found, current_user().id, conversation_id, subscription, since)

    async def frames() -> AsyncIterator[bytes]:
        with subscription:
            async for frame in relay(subscription):
                yield frame

    return sse_response(frames())


@blueprint.post("/<uuid:conversation_id>/cancel")
@document_response(CancelResult, 202)
@document_response(Error, 401)
@document_response(Error, 404)
@require_user
async def post_cancel(conversation_id: UUID) -> tuple[dict[str, bool], int]:
    """Stop the reply being generated; what was generated is kept, marked `cancelled`."""
    cancelled = await operations.cancel_reply(services(), current_user().id, conversation_id)
    return {"cancelled": cancelled}, 202
