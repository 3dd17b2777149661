"""Failed replies say why: `messages.error_code` and `messages.error_detail`.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable columns without defaults: an ALTER on both backends, no table rebuild.
    op.add_column("messages", sa.Column("error_code", sa.String(64), nullable=True))
    op.add_column("messages", sa.Column("error_detail", sa.Text, nullable=True))


def downgrade() -> None:
    # Batch mode: SQLite rebuilds the table; PostgreSQL drops the columns in place.
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("error_detail")
        batch.drop_column("error_code")
