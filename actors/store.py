"""What an actor needs from storage, and its implementation over `storage/` and a database.

The actor tests on trio use an in-memory store behind the same protocol (the database drivers
are asyncio-only).
"""

from __future__ import annotations

import uuid
from typing import Any, Protocol

from databases import Database

from storage import conversations, messages
from storage.rows import Conversation, Message


class Store(Protocol):
    """Every read and write is on behalf of the conversation's owner: a conversation that is
    deleted or another user's has no messages to give."""

    async def load_conversation(
        self, user_id: uuid.UUID, conversation_id: uuid.UUID
    ) -> Conversation | None: ...

    async def load_history(
        self, user_id: uuid.UUID, conversation_id: uuid.UUID, limit: int
    ) -> list[Message]: ...

    async def insert_message(
        self, *, user_id: uuid.UUID, conversation_id: uuid.UUID, **fields: Any
    ) -> tuple[Message, bool]: ...

    async def reply_after(
        self, user_id: uuid.UUID, conversation_id: uuid.UUID, seq: int
    ) -> Message | None: ...

    async def auto_title(
        self, user_id: uuid.UUID, conversation_id: uuid.UUID, title: str
    ) -> Conversation | None: ...


class DatabaseStore:
    """The real store: each call runs in the calling task's own connection."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def load_conversation(
        self, user_id: uuid.UUID, conversation_id: uuid.UUID
    ) -> Conversation | None:
        return await conversations.select_conversation(self.db, user_id, conversation_id)

    async def load_history(
        self, user_id: uuid.UUID, conversation_id: uuid.UUID, limit: int
    ) -> list[Message]:
        return await messages.select_recent_messages(self.db, user_id, conversation_id, limit=limit)

    async def insert_message(
        self, *, user_id: uuid.UUID, conversation_id: uuid.UUID, **fields: Any
    ) -> tuple[Message, bool]:
        return await messages.insert_message(
            self.db, user_id=user_id, conversation_id=conversation_id, **fields
        )

    async def reply_after(
        self, user_id: uuid.UUID, conversation_id: uuid.UUID, seq: int
    ) -> Message | None:
        return await messages.select_reply(self.db, user_id, conversation_id, seq)

    async def auto_title(
        self, user_id: uuid.UUID, conversation_id: uuid.UUID, title: str
    ) -> Conversation | None:
        return await conversations.update_conversation_title(
            self.db, user_id, conversation_id, title=title, by_user=False
        )
