"""The fencing number of a conversation (`conversations.fence`, see actors/lease.py).

Raising runs at every actor start (with a bridge): compiled once (`storage/compiled.py`).
"""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from databases import Database

from storage.compiled import Statement
from storage.tables import conversations


async def raise_fence(db: Database, conversation_id: uuid.UUID, fence: int) -> int | None:
    """Make `fence` the conversation's number unless a newer one is there already; the
    number it has now (`None` if it does not exist). One statement, on both backends."""
    value = await _raise.fetch_value(db, conversation_id=conversation_id, fence=fence)
    return None if value is None else int(value)


_fence = sa.bindparam("fence", type_=sa.BigInteger)
_raise = Statement(
    sa.update(conversations)
    .where(conversations.c.id == sa.bindparam("conversation_id"))
    .values(fence=sa.case((conversations.c.fence < _fence, _fence), else_=conversations.c.fence))
    .returning(conversations.c.fence)
)


async def fence_of(db: Database, conversation_id: uuid.UUID) -> int | None:
    """The conversation's fencing number, `None` if it does not exist."""
    value = await db.fetch_val(
        sa.select(conversations.c.fence).where(conversations.c.id == conversation_id)
    )
    return None if value is None else int(value)
