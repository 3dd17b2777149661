"""Row types and the one place where backend differences in returned values are smoothed out.

SQLite gives naive datetimes and plain JSON; asyncpg gives aware datetimes, its own UUID
class and JSON as text. Everything leaving `storage/` goes through here.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any


def utc(value: datetime | str) -> datetime:
    if isinstance(value, str):
        # SQLite read through the raw driver: `YYYY-MM-DD HH:MM:SS.ffffff`, in UTC.
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utc_or_none(value: datetime | str | None) -> datetime | None:
    return None if value is None else utc(value)


def as_uuid(value: Any) -> uuid.UUID:
    # asyncpg's UUID subclasses uuid.UUID; SQLite gives the 32-digit hex text.
    return value if isinstance(value, uuid.UUID) else uuid.UUID(value)


def as_json(value: Any) -> Any:
    if value == "[]":
        # Most messages have no references: skip the decoder.
        return []
    return json.loads(value) if isinstance(value, str | bytes) else value


def now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class User:
    id: uuid.UUID
    email: str
    password_hash: str
    display_name: str | None
    is_active: bool
    created_at: datetime

    @classmethod
    def from_row(cls, row: Any) -> User:
        return cls(
            id=as_uuid(row["id"]),
            email=row["email"],
            password_hash=row["password_hash"],
            display_name=row["display_name"],
            is_active=bool(row["is_active"]),
            created_at=utc(row["created_at"]),
        )


@dataclass(frozen=True, slots=True)
class Conversation:
    id: uuid.UUID
    user_id: uuid.UUID
    title: str
    title_set_by_user: bool
    created_at: datetime
    updated_at: datetime
    deleted_at: datetime | None
    total_messages: int
    total_tokens_used: int
    is_auditable: bool
    retention_days: int

    @classmethod
    def new(
        cls, *, user_id: uuid.UUID, title: str, title_set_by_user: bool, retention_days: int
    ) -> Conversation:
        """A conversation not stored yet: no messages, created now."""
        at = now()
        return cls(
            id=uuid.uuid4(),
            user_id=user_id,
            title=title,
            title_set_by_user=title_set_by_user,
            created_at=at,
            updated_at=at,
            deleted_at=None,
            total_messages=0,
            total_tokens_used=0,
            is_auditable=False,
            retention_days=retention_days,
        )

    @classmethod
    def from_row(cls, row: Any) -> Conversation:
        return cls(
            id=as_uuid(row["id"]),
            user_id=as_uuid(row["user_id"]),
            title=row["title"],
            title_set_by_user=bool(row["title_set_by_user"]),
            created_at=utc(row["created_at"]),
            updated_at=utc(row["updated_at"]),
            deleted_at=utc_or_none(row["deleted_at"]),
            total_messages=row["total_messages"],
            total_tokens_used=row["total_tokens_used"],
            is_auditable=bool(row["is_auditable"]),
            retention_days=row["retention_days"],
        )


@dataclass(frozen=True, slots=True)
class Message:
    id: uuid.UUID
    conversation_id: uuid.UUID
    seq: int
    role: str
    content: str
    status: str
    model_used: str | None
    confidence_score: float | None
    entity_references: list[dict[str, Any]]
    entity_links: list[dict[str, Any]]
    prompt_tokens: int | None
    completion_tokens: int | None
    idempotency_key: str | None
    created_at: datetime
    # Why a failed reply failed; `None` for every other message.
    error_code: str | None = None
    error_detail: str | None = None

    @classmethod
    def from_row(cls, row: Any) -> Message:
        return cls(
            id=as_uuid(row["id"]),
            conversation_id=as_uuid(row["conversation_id"]),
            seq=row["seq"],
            role=row["role"],
            content=row["content"],
            status=row["status"],
            model_used=row["model_used"],
            confidence_score=row["confidence_score"],
            entity_references=as_json(row["entity_references"]),
            entity_links=as_json(row["entity_links"]),
            prompt_tokens=row["prompt_tokens"],
            completion_tokens=row["completion_tokens"],
            idempotency_key=row["idempotency_key"],
            created_at=utc(row["created_at"]),
            error_code=row["error_code"],
            error_detail=row["error_detail"],
        )
