"""Request and response models of the HTTP API (`XData` in, `X`/`Xs` out, `XFilter` queries)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal
from uuid import UUID

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    WithJsonSchema,
)

# Contract: ISO 8601 with an explicit `+00:00` offset (pydantic alone would write `Z`).
Timestamp = Annotated[
    datetime,
    PlainSerializer(lambda v: v.isoformat(), return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]


# Far beyond any real list, and `offset + limit` stays a 32-bit integer, the type of a
# message's position (an offset past 64 bits, or near 2**31 on PostgreSQL, failed with a 500).
MAX_OFFSET = 1_000_000_000
# Unicode's White_Space: what `\s` means to the validators (pydantic's and schemathesis' regex
# engines), where Python's `str.strip()` would also take U+001C..U+001F.
WHITE_SPACE = (
    "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008"
    "\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
# Stored text has no NUL (PostgreSQL cannot store one); a required text also has a character
# that is not white space.
NO_NUL = r"^[^\x00]*$"
NOT_BLANK = r"^[^\x00]*[^\s\x00][^\x00]*$"


def _strip(value: str) -> str:
    return value.strip(WHITE_SPACE)


def _strip_not_blank(value: str) -> str:
    value = value.strip(WHITE_SPACE)
    if not value:
        raise ValueError("must not be blank")
    return value


# The documented limits hold for the text as sent; it is stripped afterwards. (Stripping first
# would let a 10,001-character body through when it is mostly spaces, and no document could
# say so.)
Stripped = AfterValidator(_strip)
NotBlank = AfterValidator(_strip_not_blank)
MessageText = Annotated[str, Field(min_length=1, max_length=10_000, pattern=NOT_BLANK), NotBlank]
TitleText = Annotated[str, Field(min_length=1, max_length=500, pattern=NOT_BLANK), NotBlank]


class _Input(BaseModel):
    """Bodies reject unknown fields and wrong types instead of silently dropping or coercing."""

    model_config = ConfigDict(extra="forbid", strict=True)


class _Query(BaseModel):
    # Query strings are text: numbers must be parsed from them, so not strict.
    model_config = ConfigDict(extra="forbid")


class Error(BaseModel):
    """Every error answer: a readable detail (or the field errors) and a stable code."""

    detail: str | list[dict[str, Any]]
    code: str


class UserData(_Input):
    # The pattern admits no white space, so there is nothing to strip.
    email: str = Field(
        min_length=3,
        max_length=320,
        pattern=r"^[^@\s\x00]+@[^@\s\x00]+\.[^@\s\x00]+$",
        examples=["a@b.io"],
    )
    # Passwords are taken as typed: stripping one would change it behind the user's back.
    password: str = Field(min_length=8, max_length=128)
    display_name: (
        Annotated[str, Field(min_length=1, max_length=100, pattern=NOT_BLANK), NotBlank] | None
    ) = None


class LoginData(_Input):
    email: Annotated[str, Field(min_length=1, max_length=320, pattern=NOT_BLANK), NotBlank]
    password: str = Field(min_length=1, max_length=128)


class Token(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int


class UserResponse(BaseModel):
    id: UUID
    email: str
    display_name: str | None
    is_active: bool
    created_at: Timestamp


class ConversationData(_Input):
    title: Annotated[str, Field(max_length=500, pattern=NO_NUL), Stripped] | None = None


class TitleData(_Input):
    title: TitleText


class ConversationFilter(_Query):
    offset: int = Field(0, ge=0, le=MAX_OFFSET)
    limit: int = Field(20, ge=1, le=100)


class ConversationResponse(BaseModel):
    id: UUID
    title: str
    created_at: Timestamp
    updated_at: Timestamp
    total_messages: int


class Conversations(BaseModel):
    items: list[ConversationResponse]
    total: int
    offset: int
    limit: int


class MessageData(_Input):
    message: MessageText


class MessageFilter(_Query):
    offset: int = Field(0, ge=0, le=MAX_OFFSET)
    limit: int = Field(50, ge=1, le=200)


class StreamFilter(_Query):
    message: MessageText


class EntityReference(BaseModel):
    type: str
    id: str
    label: str


class EntityLink(BaseModel):
    title: str
    url: str


class MessageError(BaseModel):
    """Why a reply failed: a stable `code` (for example `upstream_truncated`) and a readable
    `detail`."""

    code: str
    detail: str | None


class MessageResponse(BaseModel):
    id: UUID
    role: Literal["user", "assistant"]
    content: str
    created_at: Timestamp
    status: Literal["complete", "streaming", "cancelled", "failed"]
    model_used: str | None
    confidence_score: float | None = Field(ge=0, le=1)
    entity_references: list[EntityReference]
    entity_links: list[EntityLink]
    error: MessageError | None = Field(description="Why the reply failed (`status` `failed`).")


class Messages(BaseModel):
    items: list[MessageResponse]
    total: int
    offset: int
    limit: int


class TicketFilter(_Query):
    offset: int = Field(0, ge=0, le=MAX_OFFSET)
    limit: int = Field(20, ge=1, le=100)
    status: Literal["open", "pending", "resolved", "closed"] | None = Field(
        None, description="Only tickets with this status."
    )


class TicketResponse(BaseModel):
    """A support ticket; `number` is the one its owner quotes ("Ticket #12")."""

    id: UUID
    number: int = Field(ge=1)
    subject: str
    description: str
    priority: Literal["low", "normal", "high", "urgent"]
    status: Literal["open", "pending", "resolved", "closed"]
    conversation_id: UUID | None = Field(
        description="The conversation it was opened from (null once that one is purged)."
    )
    created_at: Timestamp
    updated_at: Timestamp


class TicketCommentResponse(BaseModel):
    id: UUID
    author: Literal["user", "assistant"]
    body: str
    created_at: Timestamp


class TicketDetail(TicketResponse):
    """A ticket with its comments, oldest first."""

    comments: list[TicketCommentResponse]


class Tickets(BaseModel):
    items: list[TicketResponse]
    total: int
    offset: int
    limit: int


class Health(BaseModel):
    status: Literal["ok", "unavailable"]
    checks: dict[str, str] = {}
    # /readyz only: which assistant answers (`provider`, and `model` for an OpenAI one).
    assistant: dict[str, str] | None = None
    # /readyz only: the process that answered (one of several with `parley serve --workers`).
    pid: int | None = None


class CancelResult(BaseModel):
    """Whether a reply was being generated (and is now stopped)."""

    cancelled: bool


class _Event(BaseModel):
    conversation_id: UUID
    # Absent only on the frames a retried route 7 replays: they repeat stored facts.
    epoch: str | None = None
    seq: int | None = Field(None, ge=1)


class MessageEvent(_Event):
    """A user message was stored."""

    type: Literal["message"]
    message: MessageResponse
    # The WebSocket that sent it, when one did: a client's other sockets tell theirs apart.
    origin: str | None = None


class ChunkEvent(_Event):
    """Part of the assistant's reply (one or more tokens)."""

    type: Literal["chunk"]
    message_id: UUID
    content: str


class ToolCallEvent(_Event):
    """The assistant calls a tool."""

    type: Literal["tool_call"]
    message_id: UUID
    name: str
    arguments: dict[str, Any]


class ToolResultEvent(_Event):
    """A tool answered."""

    type: Literal["tool_result"]
    message_id: UUID
    name: str
    ok: bool


class CompleteEvent(_Event):
    """The reply is stored."""

    type: Literal["complete"]
    message: MessageResponse


class StoppedEvent(_Event):
    """The reply stopped; `message` is what was stored of it (absent if it could not be).

    On route 7 an `error` without `message_id` (code `rate_limited`, with `retry_after` in
    seconds) means the message was refused before it was stored: nothing was sent.
    """

    type: Literal["cancelled", "error"]
    message_id: UUID | None = None
    error: str
    code: str
    message: MessageResponse | None = None
    retry_after: float | None = None


class ConversationEvent(_Event):
    """The conversation changed (title, counts) or was deleted."""

    type: Literal["conversation_updated", "conversation_deleted"]
    conversation: ConversationResponse


class ResetEvent(BaseModel):
    """Reload the messages list: the position could not be honoured, or the client fell behind.

    It has no id, so a client keeps its last position.
    """

    type: Literal["reset"]
    conversation_id: UUID
    reason: str


# One `data:` line of an event stream (contract §4), told apart by `type`.
StreamEvent = Annotated[
    MessageEvent
    | ChunkEvent
    | ToolCallEvent
    | ToolResultEvent
    | CompleteEvent
    | StoppedEvent
    | ConversationEvent
    | ResetEvent,
    Field(discriminator="type"),
]


class EventStream(BaseModel):
    """Server-Sent Events: per event an `id: <epoch>:<seq>` line and a `data: <json>` line.

    The stream opens with a `: connected` comment, and `: keep-alive` comments come after
    quiet spells; `reset` events carry no id.
    """

    media_type: ClassVar[str] = "text/event-stream"


class ToolDescription(BaseModel):
    # Namespaced `<server>__<tool>`, as the model sees it.
    name: str
    description: str
    input_schema: dict[str, Any]


class ToolServerStatus(BaseModel):
    name: str
    state: Literal["idle", "starting", "ready", "failed", "disabled", "stopped"]
    last_error: str | None
    restarts: int
    tools: list[ToolDescription]


class ToolServers(BaseModel):
    servers: list[ToolServerStatus]
