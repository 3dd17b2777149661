"""Request and response models of the HTTP API (`XData` in, `X`/`Xs` out, `XFilter` queries)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, WithJsonSchema

# Contract: ISO 8601 with an explicit `+00:00` offset (pydantic alone would write `Z`).
Timestamp = Annotated[
    datetime,
    PlainSerializer(lambda v: v.isoformat(), return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]


class _Input(BaseModel):
    """Bodies reject unknown fields and wrong types instead of silently dropping or coercing."""

    model_config = ConfigDict(extra="forbid", strict=True, str_strip_whitespace=True)


class _Query(BaseModel):
    # Query strings are text: numbers must be parsed from them, so not strict.
    model_config = ConfigDict(extra="forbid")


class Error(BaseModel):
    """Every error answer: a readable detail (or the field errors) and a stable code."""

    detail: str | list[dict[str, Any]]
    code: str


class UserData(_Input):
    email: str = Field(
        min_length=3, max_length=320, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$", examples=["a@b.io"]
    )
    password: str = Field(min_length=8, max_length=128)
    display_name: str | None = Field(None, min_length=1, max_length=100)


class LoginData(_Input):
    email: str = Field(min_length=1, max_length=320)
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
    title: str | None = Field(None, max_length=500)


class TitleData(_Input):
    title: str = Field(min_length=1, max_length=500)


class ConversationFilter(_Query):
    offset: int = Field(0, ge=0)
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
    message: str = Field(min_length=1, max_length=10_000)


class MessageFilter(_Query):
    offset: int = Field(0, ge=0)
    limit: int = Field(50, ge=1, le=200)


class StreamFilter(_Query):
    message: str = Field(min_length=1, max_length=10_000)


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


class Health(BaseModel):
    status: Literal["ok", "unavailable"]
    checks: dict[str, str] = {}
    # /readyz only: which assistant answers (`provider`, and `model` for an OpenAI one).
    assistant: dict[str, str] | None = None


class CancelResult(BaseModel):
    """Whether a reply was being generated (and is now stopped)."""

    cancelled: bool


class StreamEvent(BaseModel):
    """One event of a conversation (contract §4), sent as `id: <epoch>:<seq>` and `data: <json>`.

    A comment line `: keep-alive` comes every 15 s of silence. `reset` (no id) tells the client
    to reload the messages list: its position could not be honoured, or it fell behind.
    """

    media_type: ClassVar[str] = "text/event-stream"

    type: Literal[
        "message",
        "chunk",
        "tool_call",
        "tool_result",
        "complete",
        "cancelled",
        "error",
        "conversation_updated",
        "conversation_deleted",
        "reset",
    ]
    conversation_id: UUID
    epoch: str | None = None
    seq: int | None = None
    message: MessageResponse | None = None
    message_id: UUID | None = None
    content: str | None = None
    name: str | None = None
    arguments: dict[str, Any] | None = None
    ok: bool | None = None
    error: str | None = None
    code: str | None = None
    conversation: ConversationResponse | None = None
