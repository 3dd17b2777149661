"""What an actor needs from a model provider: the protocol `chat/assistant/` implements."""

from __future__ import annotations

import uuid
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class Turn:
    """One message of the history the provider answers."""

    role: str
    content: str


@dataclass(frozen=True, slots=True)
class ReplyRequest:
    """Everything a provider gets: the history (oldest first, ending with the question) and
    whose conversation it is, so tools that touch user data are scoped by the service."""

    conversation_id: uuid.UUID
    user_id: uuid.UUID
    history: tuple[Turn, ...]
    # False when nobody watches the reply arrive (a synchronous POST): a provider that paces
    # its output for readers (the local one) then answers at full speed.
    paced: bool = True


@dataclass(frozen=True, slots=True)
class TextDelta:
    """Part of the reply's text."""

    text: str


@dataclass(frozen=True, slots=True)
class ToolCall:
    """The provider calls a tool."""

    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ToolResult:
    """A tool call finished (`ok` false when the tool or its server failed)."""

    name: str
    ok: bool


@dataclass(frozen=True, slots=True)
class ReplyInfo:
    """What the provider knows about its reply; fields left `None` keep earlier values."""

    model: str | None = None
    confidence: float | None = None
    entity_references: list[dict[str, Any]] = field(default_factory=list)
    entity_links: list[dict[str, Any]] = field(default_factory=list)
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


ReplyPart = TextDelta | ToolCall | ToolResult | ReplyInfo


class ProviderError(Exception):
    """The model could not answer (HTTP error, rate limit, timeout, broken stream).

    The reply is stored as `failed` with what was generated, and the actor carries on.
    Any other exception from a provider is a crash: the actor restarts.
    """

    def __init__(self, message: str, code: str = "provider_error") -> None:
        super().__init__(message)
        self.code = code


class Provider(Protocol):
    """A source of replies. `stream` is an async generator of reply parts."""

    def stream(self, request: ReplyRequest) -> AsyncGenerator[ReplyPart, None]: ...
