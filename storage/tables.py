"""The schema, as SQLAlchemy Core tables. Alembic's revisions must match these exactly."""

from __future__ import annotations

import sqlalchemy as sa

# Stable constraint names so Alembic can diff and drop them on every backend.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)

Timestamp = sa.DateTime(timezone=True)

users = sa.Table(
    "users",
    metadata,
    sa.Column("id", sa.Uuid, primary_key=True),
    sa.Column("email", sa.String(320), nullable=False, unique=True),
    sa.Column("password_hash", sa.String(255), nullable=False),
    sa.Column("display_name", sa.String(100), nullable=True),
    sa.Column("is_active", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column("created_at", Timestamp, nullable=False),
    # Live (not deleted) conversations, kept with each create and delete: the list route's
    # total without counting rows.
    sa.Column("total_conversations", sa.Integer, nullable=False, server_default="0"),
    # The number of the user's latest ticket (revision 0004): each new ticket takes the next
    # one, so a user's tickets are #1, #2, ... whatever other users open.
    sa.Column("tickets_opened", sa.Integer, nullable=False, server_default="0"),
)

conversations = sa.Table(
    "conversations",
    metadata,
    sa.Column("id", sa.Uuid, primary_key=True),
    sa.Column("user_id", sa.Uuid, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    sa.Column("title", sa.String(500), nullable=False),
    sa.Column("title_set_by_user", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("updated_at", Timestamp, nullable=False),
    sa.Column("deleted_at", Timestamp, nullable=True),
    sa.Column("total_messages", sa.Integer, nullable=False, server_default="0"),
    sa.Column("total_tokens_used", sa.Integer, nullable=False, server_default="0"),
    sa.Column("is_auditable", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("retention_days", sa.Integer, nullable=False, server_default="30"),
    # The fencing number of the cluster-wide lease whose actor may write (actors/lease.py).
    sa.Column("fence", sa.BigInteger, nullable=False, server_default="0"),
    # The sweeper scans soft-deleted rows only.
    sa.Index(
        "ix_conversations_deleted_at",
        "deleted_at",
        sqlite_where=sa.text("deleted_at IS NOT NULL"),
        postgresql_where=sa.text("deleted_at IS NOT NULL"),
    ),
)

# The list route reads a user's live conversations newest first.
sa.Index(
    "ix_conversations_user_live",
    conversations.c.user_id,
    conversations.c.updated_at.desc(),
    sqlite_where=sa.text("deleted_at IS NULL"),
    postgresql_where=sa.text("deleted_at IS NULL"),
)

messages = sa.Table(
    "messages",
    metadata,
    sa.Column("id", sa.Uuid, primary_key=True),
    sa.Column(
        "conversation_id",
        sa.Uuid,
        sa.ForeignKey("conversations.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("seq", sa.Integer, nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("content", sa.Text, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("model_used", sa.String(200), nullable=True),
    sa.Column("confidence_score", sa.Float, nullable=True),
    sa.Column("entity_references", sa.JSON, nullable=False),
    sa.Column("entity_links", sa.JSON, nullable=False),
    sa.Column("prompt_tokens", sa.Integer, nullable=True),
    sa.Column("completion_tokens", sa.Integer, nullable=True),
    sa.Column("idempotency_key", sa.String(200), nullable=True),
    sa.Column("created_at", Timestamp, nullable=False),
    # Why a reply failed (revision 0002): a short machine code and the human-readable detail.
    sa.Column("error_code", sa.String(64), nullable=True),
    sa.Column("error_detail", sa.Text, nullable=True),
    sa.UniqueConstraint("conversation_id", "seq"),
    sa.UniqueConstraint("conversation_id", "idempotency_key"),
    sa.CheckConstraint("role IN ('user', 'assistant')", name="role"),
    sa.CheckConstraint("status IN ('complete', 'streaming', 'cancelled', 'failed')", name="status"),
)

TICKET_PRIORITIES = ("low", "normal", "high", "urgent")
TICKET_STATUSES = ("open", "pending", "resolved", "closed")
COMMENT_AUTHORS = ("user", "assistant")


def _one_of(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


# Support tickets (revision 0004), always owned by a user.
tickets = sa.Table(
    "tickets",
    metadata,
    sa.Column("id", sa.Uuid, primary_key=True),
    sa.Column("user_id", sa.Uuid, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    # The number the user quotes ("Ticket #12"), per user.
    sa.Column("number", sa.Integer, nullable=False),
    # The conversation it was opened from; a ticket outlives the purge of its conversation.
    sa.Column(
        "conversation_id",
        sa.Uuid,
        sa.ForeignKey("conversations.id", ondelete="SET NULL"),
        nullable=True,
        index=True,
    ),
    sa.Column("subject", sa.String(200), nullable=False),
    sa.Column("description", sa.Text, nullable=False),
    sa.Column("priority", sa.String(16), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("updated_at", Timestamp, nullable=False),
    sa.UniqueConstraint("user_id", "number"),
    sa.CheckConstraint(_one_of("priority", TICKET_PRIORITIES), name="priority"),
    sa.CheckConstraint(_one_of("status", TICKET_STATUSES), name="status"),
)

# The list route reads a user's tickets most recently updated first.
sa.Index("ix_tickets_user_updated", tickets.c.user_id, tickets.c.updated_at.desc())

ticket_comments = sa.Table(
    "ticket_comments",
    metadata,
    sa.Column("id", sa.Uuid, primary_key=True),
    sa.Column(
        "ticket_id", sa.Uuid, sa.ForeignKey("tickets.id", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("author", sa.String(16), nullable=False),
    sa.Column("body", sa.Text, nullable=False),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.CheckConstraint(_one_of("author", COMMENT_AUTHORS), name="author"),
    # A ticket's comments are read oldest first.
    sa.Index("ix_ticket_comments_ticket_id_created_at", "ticket_id", "created_at"),
)
