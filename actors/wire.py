"""The JSON shapes of conversations and messages, shared by the HTTP answers and the events.

Built by hand from the storage rows: these are on every hot path, and a plain dict costs a
fraction of a validated model (the schemas in `chat/schemas.py` document the same shapes and
the tests hold the two together).
"""

from __future__ import annotations

from typing import Any

from storage.rows import Conversation, Message

JSONDict = dict[str, Any]


def conversation_json(conversation: Conversation) -> JSONDict:
    return {
        "id": str(conversation.id),
        "title": conversation.title,
        "created_at": conversation.created_at.isoformat(),
        "updated_at": conversation.updated_at.isoformat(),
        "total_messages": conversation.total_messages,
    }


def message_json(message: Message) -> JSONDict:
    return {
        "id": str(message.id),
        "role": message.role,
        "content": message.content,
        "created_at": message.created_at.isoformat(),
        "status": message.status,
        "model_used": message.model_used,
        "confidence_score": message.confidence_score,
        "entity_references": message.entity_references,
        "entity_links": message.entity_links,
        "error": None
        if message.error_code is None
        else {"code": message.error_code, "detail": message.error_detail},
    }
