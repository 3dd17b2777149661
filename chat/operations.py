"""What a signed-in user can do, once, for every door (REST, SSE and the WebSocket).

Each function takes the services and the acting user's id explicitly, so it needs no request
context; ownership, idempotency and the events a change publishes are decided here and
nowhere else. Errors are `chat.errors.APIError` (or the actors' and storage's own), which
each door turns into its own answer through the one table in `chat/errors.py`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from uuid import UUID

import anyio

from actors.commands import Accepted, PostMessage
from actors.events import Position
from actors.hub import Subscriber
from actors.wire import conversation_json, message_json
from chat.errors import APIError, not_found
from chat.services import Services
from storage.conversations import (
    insert_conversation,
    select_conversations,
    soft_delete_conversation,
    update_conversation_title,
)
from storage.messages import select_messages
from storage.rows import Conversation

DEFAULT_TITLE = "New conversation"
# How long a caller waits for a busy conversation's actor to take its message.
ACCEPT_DEADLINE_S = 30.0
MAX_IDEMPOTENCY_KEY = 200
JSONDict = dict[str, Any]


def check_idempotency_key(key: str | None) -> str | None:
    """The key stripped, or 422 when it is empty or too long."""
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


def publish_change(found: Services, type: str, conversation: Conversation) -> None:
    """Tell the conversation's subscribers (and its owner's) what became of it."""
    found.hub.publish(
        conversation.id,
        conversation.user_id,
        type,
        {"conversation": conversation_json(conversation)},
    )


async def list_conversations(
    found: Services, user_id: UUID, *, offset: int, limit: int
) -> JSONDict:
    """One page of the user's conversations, most recently active first."""
    items, total = await select_conversations(found.db, user_id, offset=offset, limit=limit)
    return {
        "items": [conversation_json(c) for c in items],
        "total": total,
        "offset": offset,
        "limit": limit,
    }


async def create_conversation(found: Services, user_id: UUID, title: str | None) -> Conversation:
    """Start a conversation; without a title it gets one from its first message.

    Published as `conversation_updated`, so the user's other clients see it appear.
    """
    conversation = await insert_conversation(
        found.db,
        user_id=user_id,
        title=title or DEFAULT_TITLE,
        title_set_by_user=bool(title),
        retention_days=found.settings.retention_days,
    )
    publish_change(found, "conversation_updated", conversation)
    return conversation


async def get_messages(
    found: Services, user_id: UUID, conversation_id: UUID, *, offset: int, limit: int
) -> JSONDict:
    """One page of a conversation's messages, oldest first; 404 unless it is the user's."""
    page = await select_messages(found.db, user_id, conversation_id, offset=offset, limit=limit)
    if page is None:
        raise not_found()
    items, total = page
    return {
        "items": [message_json(m) for m in items],
        "total": total,
        "offset": offset,
        "limit": limit,
    }


async def rename_conversation(
    found: Services, user_id: UUID, conversation_id: UUID, title: str
) -> Conversation:
    """Rename; an automatic title never replaces this one."""
    conversation = await update_conversation_title(
        found.db, user_id, conversation_id, title=title, by_user=True
    )
    if conversation is None:
        raise not_found()
    found.registry.update_conversation(conversation)
    publish_change(found, "conversation_updated", conversation)
    return conversation


async def delete_conversation(found: Services, user_id: UUID, conversation_id: UUID) -> None:
    """Soft-delete: its reply stops, its streams end, and it is 404 everywhere from now on."""
    conversation = await soft_delete_conversation(found.db, user_id, conversation_id)
    if conversation is None:
        raise not_found()
    await found.registry.discard_anywhere(user_id, conversation_id)
    publish_change(found, "conversation_deleted", conversation)


async def post_message(
    found: Services,
    user_id: UUID,
    conversation_id: UUID,
    content: str,
    key: str | None,
    *,
    paced: bool = True,
    origin: str | None = None,
) -> PostMessage:
    """Deliver a message to the conversation's mailbox (404 unless it is the user's).

    `paced=False` lets the reply come as fast as the model gives it: nobody reads it token by
    token. `origin` names the sending connection in the `message` event, so the user's other
    connections can tell the message came from elsewhere. Waiting for it to be stored is
    `accepted`: a caller that must stay responsive meanwhile (a socket) waits elsewhere.

    The user's limits come first, for every door alike: 429 `rate_limited` when all their
    concurrent replies are taken (the slot is held until this reply ends) or their message
    budget is spent.
    """
    release = await _check_limits(found, user_id, conversation_id)
    try:
        with anyio.fail_after(ACCEPT_DEADLINE_S):
            command = await found.registry.post_message(
                user_id, conversation_id, content, key, paced=paced, origin=origin
            )
    except TimeoutError:
        if release is not None:
            release()
        raise _busy() from None
    except BaseException:
        if release is not None:
            release()
        raise
    if release is not None:
        command.finished.when_done(release)
    return command


async def _check_limits(
    found: Services, user_id: UUID, conversation_id: UUID
) -> Callable[[], None] | None:
    """A concurrent-reply slot (and its release), then one message of the budget; 429."""
    throttle = found.throttle
    if throttle is None:
        return None
    release = throttle.take_reply_slot(user_id)
    try:
        await throttle.check_message(user_id, conversation_id)
    except BaseException:
        if release is not None:
            release()
        raise
    return release


async def accepted(command: PostMessage) -> Accepted:
    """Wait until the message is stored. 503 if that takes longer than `ACCEPT_DEADLINE_S`
    (the actor is busy or the server is overloaded); the command may still be carried out,
    and a retry with the same `Idempotency-Key` then returns it."""
    try:
        with anyio.fail_after(ACCEPT_DEADLINE_S):
            return await command.accepted.wait()
    except TimeoutError:
        raise _busy() from None


def _busy() -> APIError:
    return APIError(503, "unavailable", "The conversation is busy, try again", {"Retry-After": "1"})


async def send_message(
    found: Services,
    user_id: UUID,
    conversation_id: UUID,
    content: str,
    key: str | None,
    *,
    paced: bool = True,
) -> tuple[PostMessage, Accepted]:
    """Deliver a message and wait until it is stored (REST routes 4 and 7)."""
    command = await post_message(found, user_id, conversation_id, content, key, paced=paced)
    return command, await accepted(command)


async def cancel_reply(found: Services, user_id: UUID, conversation_id: UUID) -> bool:
    """Stop the reply being generated, if any; 404 unless the conversation is the user's."""
    await found.registry.check_owner(user_id, conversation_id)
    return await found.registry.cancel_anywhere(user_id, conversation_id)


async def check_owner(found: Services, user_id: UUID, conversation_id: UUID) -> None:
    """404 unless the conversation is the user's, and not deleted."""
    await found.registry.check_owner(user_id, conversation_id)


async def follow(
    found: Services,
    user_id: UUID,
    conversation_id: UUID,
    subscriber: Subscriber,
    since: Position | None,
) -> None:
    """Attach a subscriber to a conversation's events (replaying after `since`); 404 unless
    the conversation is the user's."""
    await found.registry.check_owner(user_id, conversation_id)
    await found.hub.follow(subscriber, since)


def parse_position(text: str | None) -> Position | None:
    """A `Last-Event-ID` / `since` value; one that cannot be read gets `reset` on replay."""
    since = Position.parse(text)
    if text and since is None:
        return Position("unreadable", 0)
    return since
