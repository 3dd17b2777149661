"""Fencing of reply writes across instances: `conversations.fence`.

The holder of a conversation's lease in Redis (actors/lease.py) raises it to its fencing
number when its actor starts, and every message insert checks it, so an actor that lost its
lease (paused past its expiry) cannot write after the new holder started.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-10
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # NOT NULL with a server default: an ALTER on both backends, no table rebuild.
    op.add_column(
        "conversations",
        sa.Column("fence", sa.BigInteger, nullable=False, server_default="0"),
    )


def downgrade() -> None:
    # Batch mode: SQLite rebuilds the table; PostgreSQL drops the column in place.
    with op.batch_alter_table("conversations") as batch:
        batch.drop_column("fence")
