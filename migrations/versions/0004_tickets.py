"""Support tickets: `tickets`, `ticket_comments` and `users.tickets_opened`.

A ticket belongs to a user, who quotes it by a number of their own (`users.tickets_opened`
hands out the next one), and keeps the conversation it was opened from until that
conversation is purged (`ON DELETE SET NULL`).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

Timestamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    # NOT NULL with a server default: an ALTER on both backends, no table rebuild.
    op.add_column(
        "users",
        sa.Column("tickets_opened", sa.Integer, nullable=False, server_default="0"),
    )
    op.create_table(
        "tickets",
        sa.Column("id", sa.Uuid, nullable=False),
        sa.Column("user_id", sa.Uuid, nullable=False),
        sa.Column("number", sa.Integer, nullable=False),
        sa.Column("conversation_id", sa.Uuid, nullable=True),
        sa.Column("subject", sa.String(200), nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("priority", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("updated_at", Timestamp, nullable=False),
        sa.CheckConstraint(
            "priority IN ('low', 'normal', 'high', 'urgent')", name="ck_tickets_priority"
        ),
        sa.CheckConstraint(
            "status IN ('open', 'pending', 'resolved', 'closed')", name="ck_tickets_status"
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_tickets_user_id_users", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            ["conversations.id"],
            name="fk_tickets_conversation_id_conversations",
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_tickets"),
        sa.UniqueConstraint("user_id", "number", name="uq_tickets_user_id_number"),
    )
    op.create_index("ix_tickets_conversation_id", "tickets", ["conversation_id"])
    op.create_index("ix_tickets_user_updated", "tickets", ["user_id", sa.text("updated_at DESC")])
    op.create_table(
        "ticket_comments",
        sa.Column("id", sa.Uuid, nullable=False),
        sa.Column("ticket_id", sa.Uuid, nullable=False),
        sa.Column("author", sa.String(16), nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.CheckConstraint("author IN ('user', 'assistant')", name="ck_ticket_comments_author"),
        sa.ForeignKeyConstraint(
            ["ticket_id"],
            ["tickets.id"],
            name="fk_ticket_comments_ticket_id_tickets",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_ticket_comments"),
    )
    op.create_index(
        "ix_ticket_comments_ticket_id_created_at", "ticket_comments", ["ticket_id", "created_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_ticket_comments_ticket_id_created_at", table_name="ticket_comments")
    op.drop_table("ticket_comments")
    op.drop_index("ix_tickets_user_updated", table_name="tickets")
    op.drop_index("ix_tickets_conversation_id", table_name="tickets")
    op.drop_table("tickets")
    # Batch mode: SQLite rebuilds the table; PostgreSQL drops the column in place.
    with op.batch_alter_table("users") as batch:
        batch.drop_column("tickets_opened")
