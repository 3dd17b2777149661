"""The frames of the `chat` WebSocket protocol: what a client may send, checked with the same
field rules as the REST bodies (`chat/schemas.py`), and the server's own frames."""

from __future__ import annotations

import json
from typing import Annotated, Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from chat.schemas import MAX_OFFSET, NO_NUL, MessageText, Stripped, TitleText

RequestId = Annotated[str, Field(max_length=200)] | int | None


class ClientFrame(BaseModel):
    """Every client frame: its `type` and an optional `request_id` echoed in the answer."""

    model_config = ConfigDict(extra="forbid", strict=True)

    type: str
    request_id: RequestId = None


class Ping(ClientFrame):
    """Is the socket alive? Answered with `pong`."""


class Auth(ClientFrame):
    """A fresh token for the same user, before the current one expires."""

    token: str = Field(min_length=1, max_length=4096)


class CreateConversation(ClientFrame):
    """Start a conversation; the socket follows it."""

    title: Annotated[str, Field(max_length=500, pattern=NO_NUL), Stripped] | None = None


class ListConversations(ClientFrame):
    """One page of my conversations, as REST route 1."""

    offset: int = Field(0, ge=0, le=MAX_OFFSET)
    limit: int = Field(20, ge=1, le=100)


class ConversationFrame(ClientFrame):
    """A frame about one conversation."""

    # Not strict: a UUID arrives as a JSON string.
    conversation_id: Annotated[UUID, Field(strict=False)]


class GetMessages(ConversationFrame):
    """One page of a conversation's messages, as REST route 3."""

    offset: int = Field(0, ge=0, le=MAX_OFFSET)
    limit: int = Field(50, ge=1, le=200)


class RenameConversation(ConversationFrame):
    """Rename a conversation."""

    title: TitleText


class DeleteConversation(ConversationFrame):
    """Delete a conversation."""


class SendMessage(ConversationFrame):
    """Send a message; its events stream to this socket and `message_response` ends it."""

    content: MessageText
    # Works as the `Idempotency-Key` of REST: a retry returns the first answer.
    client_message_id: str | None = Field(None, min_length=1, max_length=200)


class Subscribe(ConversationFrame):
    """Follow a conversation's events, after `since` (`<epoch>:<seq>`) when given."""

    since: str | None = Field(None, max_length=200)


class Unsubscribe(ConversationFrame):
    """Stop following a conversation."""


class Cancel(ConversationFrame):
    """Stop the reply being generated."""


class Typing(ConversationFrame):
    """The user is typing: the user's other sockets are told."""


def encode(frame: dict[str, Any]) -> str:
    return json.dumps(frame, separators=(",", ":"), ensure_ascii=False)


def answer(type: str, request_id: RequestId, **fields: Any) -> str:
    """A server frame, echoing the request's id when it had one."""
    frame: dict[str, Any] = {"type": type}
    if request_id is not None:
        frame["request_id"] = request_id
    frame.update(fields)
    return encode(frame)


def error(code: str, detail: Any, request_id: RequestId = None, **fields: Any) -> str:
    """An `error` frame: the socket stays open."""
    return answer("error", request_id, error=detail, code=code, **fields)
