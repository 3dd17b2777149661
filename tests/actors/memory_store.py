"""An in-memory `Store` for the trio runs of the actor tests (the database drivers need asyncio)."""

from __future__ import annotations

import uuid
from dataclasses import replace
from typing import Any

import anyio

from storage.errors import NotFound
from storage.rows import Conversation, Message, now


class MemoryStore:
    def __init__(self) -> None:
        self.conversations: dict[uuid.UUID, Conversation] = {}
        self.messages: dict[uuid.UUID, list[Message]] = {}

    def add_conversation(self, user_id: uuid.UUID, title: str = "New conversation") -> Conversation:
        conversation = Conversation.new(
            user_id=user_id, title=title, title_set_by_user=False, retention_days=30
        )
        self.conversations[conversation.id] = conversation
        self.messages[conversation.id] = []
        return conversation

    async def load_conversation(
        self, user_id: uuid.UUID, conversation_id: uuid.UUID
    ) -> Conversation | None:
        await anyio.lowlevel.checkpoint()
        found = self.conversations.get(conversation_id)
        if found is None or found.user_id != user_id or found.deleted_at is not None:
            return None
        return found

    async def load_history(
        self, user_id: uuid.UUID, conversation_id: uuid.UUID, limit: int
    ) -> list[Message]:
        if await self.load_conversation(user_id, conversation_id) is None:
            return []
        return self.messages[conversation_id][-limit:]

    async def insert_message(
        self, *, user_id: uuid.UUID, conversation_id: uuid.UUID, **fields: Any
    ) -> tuple[Message, bool]:
        await anyio.lowlevel.checkpoint()
        conversation = await self.load_conversation(user_id, conversation_id)
        if conversation is None:
            raise NotFound("conversation")
        stored = self.messages[conversation_id]
        key = fields.get("idempotency_key")
        if key is not None:
            for message in stored:
                if message.idempotency_key == key:
                    return message, False
        message = Message(
            id=fields.get("message_id") or uuid.uuid4(),
            conversation_id=conversation_id,
            seq=len(stored) + 1,
            role=fields["role"],
            content=fields["content"],
            status=fields.get("status", "complete"),
            model_used=fields.get("model_used"),
            confidence_score=fields.get("confidence_score"),
            entity_references=fields.get("entity_references") or [],
            entity_links=fields.get("entity_links") or [],
            prompt_tokens=fields.get("prompt_tokens"),
            completion_tokens=fields.get("completion_tokens"),
            idempotency_key=key,
            created_at=now(),
            error_code=fields.get("error_code"),
            error_detail=fields.get("error_detail"),
        )
        stored.append(message)
        self.conversations[conversation_id] = replace(
            conversation,
            total_messages=message.seq,
            updated_at=message.created_at,
            total_tokens_used=conversation.total_tokens_used + fields.get("tokens_used", 0),
        )
        return message, True

    async def reply_after(
        self, user_id: uuid.UUID, conversation_id: uuid.UUID, seq: int
    ) -> Message | None:
        if await self.load_conversation(user_id, conversation_id) is None:
            return None
        return next(
            (
                m
                for m in self.messages[conversation_id]
                if m.seq == seq + 1 and m.role == "assistant"
            ),
            None,
        )

    async def auto_title(
        self, user_id: uuid.UUID, conversation_id: uuid.UUID, title: str
    ) -> Conversation | None:
        found = await self.load_conversation(user_id, conversation_id)
        if found is None or found.title_set_by_user:
            return None
        self.conversations[conversation_id] = replace(found, title=title, updated_at=now())
        return self.conversations[conversation_id]
