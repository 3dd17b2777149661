"""JSON shapes of the API's own resources (conversations and messages: `actors.wire`)."""

from __future__ import annotations

from typing import Any

from storage.rows import User


def user_json(user: User) -> dict[str, Any]:
    return {
        "id": str(user.id),
        "email": user.email,
        "display_name": user.display_name,
        "is_active": user.is_active,
        "created_at": user.created_at.isoformat(),
    }
