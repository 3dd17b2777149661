"""The fencing number of a conversation (`conversations.fence`, see actors/lease.py).

Plain SQLAlchemy through `databases`: these run once per actor start, not per message.
"""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from databases import Database

from storage.tables import conversations


async def raise_fence(db: Database, conversation_id: uuid.UUID, fence: int) -> None:
    """Make `fence` the conversation's number, unless a newer one is there already."""
    await db.execute(
        sa.update(conversations)
        .where(conversations.c.id == conversation_id, conversations.c.fence < fence)
        .values(fence=fence)
    )


async def fence_of(db: Database, conversation_id: uuid.UUID) -> int | None:
    """The conversation's fencing number, `None` if it does not exist."""
    value = await db.fetch_val(
        sa.select(conversations.c.fence).where(conversations.c.id == conversation_id)
    )
    return None if value is None else int(value)
