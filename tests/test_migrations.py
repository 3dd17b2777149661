"""The Alembic revisions and `storage/` tables agree, and the revisions go down and up again."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from storage.tables import metadata
from tests import databases


@pytest.fixture(name="empty_url", params=["sqlite", "postgresql"])
def fixture_empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'm.db'}"
        return
    url = databases.create_postgres_database()
    yield url
    databases.drop_postgres_database(url)


def differences(url: str, target: sa.MetaData = metadata) -> list[Any]:
    def compare(connection: Connection) -> list[Any]:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, target))

    async def run() -> list[Any]:
        engine = create_async_engine(url)
        try:
            async with engine.connect() as connection:
                return await connection.run_sync(compare)
        finally:
            await engine.dispose()

    return databases.in_thread(lambda: asyncio.run(run()))


def table_names(url: str) -> set[str]:
    async def run() -> set[str]:
        engine = create_async_engine(url)
        try:
            async with engine.connect() as connection:
                names = await connection.run_sync(lambda c: sa.inspect(c).get_table_names())
                return set(names)
        finally:
            await engine.dispose()

    return databases.in_thread(lambda: asyncio.run(run()))


def test_revisions_match_tables_and_round_trip(empty_url: str) -> None:
    config = databases.alembic_config(empty_url)
    databases.in_thread(lambda: command.upgrade(config, "head"))
    assert differences(empty_url) == []
    databases.in_thread(lambda: command.downgrade(config, "base"))
    assert table_names(empty_url) <= {"alembic_version"}
    databases.in_thread(lambda: command.upgrade(config, "head"))
    assert differences(empty_url) == []
    assert {"users", "conversations", "messages"} <= table_names(empty_url)


def test_a_changed_table_is_noticed(empty_url: str) -> None:
    """The comparison can fail: a column the revisions lack shows up as a difference."""
    config = databases.alembic_config(empty_url)
    databases.in_thread(lambda: command.upgrade(config, "head"))
    changed = sa.MetaData(naming_convention=metadata.naming_convention)
    for table in metadata.sorted_tables:
        table.to_metadata(changed)
    changed.tables["users"].append_column(sa.Column("extra", sa.Integer, nullable=True))
    assert [d[0] for d in differences(empty_url, changed)] == ["add_column"]


def run(url: str, statements: list[str]) -> list[Any]:
    """Run SQL statements in one transaction; the rows of the last one."""

    async def go() -> list[Any]:
        engine = create_async_engine(url)
        try:
            async with engine.begin() as connection:
                result = None
                for statement in statements:
                    result = await connection.execute(sa.text(statement))
                return [] if result is None or not result.returns_rows else list(result)
        finally:
            await engine.dispose()

    return databases.in_thread(lambda: asyncio.run(go()))


def message_columns(url: str) -> set[str]:
    async def go() -> set[str]:
        engine = create_async_engine(url)
        try:
            async with engine.connect() as connection:
                columns = await connection.run_sync(lambda c: sa.inspect(c).get_columns("messages"))
                return {c["name"] for c in columns}
        finally:
            await engine.dispose()

    return databases.in_thread(lambda: asyncio.run(go()))


def test_message_errors_revision_keeps_rows_both_ways(empty_url: str) -> None:
    """0002 adds `error_code`/`error_detail` to existing rows and takes them away again,
    keeping the messages (SQLite's downgrade rebuilds the table)."""
    config = databases.alembic_config(empty_url)
    databases.in_thread(lambda: command.upgrade(config, "0001"))
    ids = [uuid.uuid4().hex for _ in range(3)]
    run(
        empty_url,
        [
            "INSERT INTO users (id, email, password_hash, created_at)"
            f" VALUES ('{ids[0]}', 'a@example.com', 'x', CURRENT_TIMESTAMP)",
            "INSERT INTO conversations (id, user_id, title, created_at, updated_at)"
            f" VALUES ('{ids[1]}', '{ids[0]}', 't', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)",
            "INSERT INTO messages (id, conversation_id, seq, role, content, status,"
            " entity_references, entity_links, created_at)"
            f" VALUES ('{ids[2]}', '{ids[1]}', 1, 'assistant', 'Hello', 'failed', '[]', '[]',"
            " CURRENT_TIMESTAMP)",
        ],
    )
    assert "error_code" not in message_columns(empty_url)

    databases.in_thread(lambda: command.upgrade(config, "0002"))
    assert {"error_code", "error_detail"} <= message_columns(empty_url)
    select = "SELECT content, error_code, error_detail FROM messages"
    assert [tuple(row) for row in run(empty_url, [select])] == [("Hello", None, None)]
    run(empty_url, ["UPDATE messages SET error_code = 'upstream_truncated'"])

    databases.in_thread(lambda: command.downgrade(config, "0001"))
    assert not {"error_code", "error_detail"} & message_columns(empty_url)
    assert [tuple(row) for row in run(empty_url, ["SELECT content, status FROM messages"])] == [
        ("Hello", "failed")
    ]
    databases.in_thread(lambda: command.upgrade(config, "head"))
    assert differences(empty_url) == []


def test_tickets_revision_keeps_users_and_conversations_both_ways(empty_url: str) -> None:
    """0004 numbers existing users' tickets from 1 and, going down, drops the tickets but keeps
    the users and conversations (SQLite's downgrade rebuilds `users`, which both reference)."""
    config = databases.alembic_config(empty_url)
    databases.in_thread(lambda: command.upgrade(config, "0003"))
    user, conversation, ticket = (uuid.uuid4().hex for _ in range(3))
    run(
        empty_url,
        [
            "INSERT INTO users (id, email, password_hash, created_at)"
            f" VALUES ('{user}', 'a@example.com', 'x', CURRENT_TIMESTAMP)",
            "INSERT INTO conversations (id, user_id, title, created_at, updated_at)"
            f" VALUES ('{conversation}', '{user}', 't', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)",
        ],
    )
    databases.in_thread(lambda: command.upgrade(config, "0004"))
    assert [tuple(row) for row in run(empty_url, ["SELECT tickets_opened FROM users"])] == [(0,)]
    run(
        empty_url,
        [
            "INSERT INTO tickets (id, user_id, number, conversation_id, subject, description,"
            " priority, status, created_at, updated_at)"
            f" VALUES ('{ticket}', '{user}', 1, '{conversation}', 'Refund', 'Where is it?',"
            " 'normal', 'open', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)",
        ],
    )
    databases.in_thread(lambda: command.downgrade(config, "0003"))
    assert not {"tickets", "ticket_comments"} & table_names(empty_url)
    assert [tuple(row) for row in run(empty_url, ["SELECT title FROM conversations"])] == [("t",)]
    assert [tuple(row) for row in run(empty_url, ["SELECT email FROM users"])] == [
        ("a@example.com",)
    ]
    databases.in_thread(lambda: command.upgrade(config, "head"))
    assert differences(empty_url) == []
