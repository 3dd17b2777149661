"""The Alembic revisions and `storage/` tables agree, and the revisions go down and up again."""

from __future__ import annotations

import asyncio
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
