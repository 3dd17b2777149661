"""Users: registration, lookup by email for login, lookup by id for every authenticated request."""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from databases import Database

from storage.compiled import Statement
from storage.errors import integrity_errors
from storage.rows import User, now
from storage.tables import users


async def insert_user(
    db: Database, *, email: str, password_hash: str, display_name: str | None
) -> User:
    """Store a new active user; `Conflict` if the email (compared case-insensitively) is taken."""
    user = User(
        id=uuid.uuid4(),
        email=email.strip().lower(),
        password_hash=password_hash,
        display_name=display_name,
        is_active=True,
        created_at=now(),
    )
    values = {f: getattr(user, f) for f in User.__slots__} | {"total_conversations": 0}
    with integrity_errors(conflict="email already registered", missing="user"):
        await db.execute(users.insert().values(**values))
    return user


_select_user = Statement(users.select().where(users.c.id == sa.bindparam("user_id")))


async def select_user(db: Database, user_id: uuid.UUID) -> User | None:
    """Every authenticated request's lookup: compiled once."""
    row = await _select_user.fetch_one(db, user_id=user_id)
    return None if row is None else User.from_row(row)


async def select_user_by_email(db: Database, email: str) -> User | None:
    row = await db.fetch_one(users.select().where(users.c.email == email.strip().lower()))
    return None if row is None else User.from_row(row)


async def update_user_active(db: Database, user_id: uuid.UUID, *, is_active: bool) -> None:
    await db.execute(sa.update(users).where(users.c.id == user_id).values(is_active=is_active))


async def update_user_password(db: Database, user_id: uuid.UUID, *, password_hash: str) -> None:
    """Replace a user's password hash (`parley user set-password`)."""
    await db.execute(
        sa.update(users).where(users.c.id == user_id).values(password_hash=password_hash)
    )
