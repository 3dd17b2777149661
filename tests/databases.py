"""Test databases: a migrated SQLite file per test, and one migrated PostgreSQL database per run."""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import asyncpg
import pytest
from alembic import command
from alembic.config import Config

ROOT = Path(__file__).resolve().parent.parent
PG_ADMIN_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
T = TypeVar("T")
REQUIRED = os.environ.get("CI", "").lower() == "true"


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(ROOT / "migrations"))
    config.attributes["database_url"] = url
    return config


def migrate(url: str) -> None:
    in_thread(lambda: command.upgrade(alembic_config(url), "head"))


def sqlite_template(folder: Path) -> Path:
    path = folder / "template.db"
    migrate(f"sqlite+aiosqlite:///{path}")
    return path


def sqlite_copy(template: Path, folder: Path) -> str:
    path = folder / f"{uuid.uuid4().hex}.db"
    shutil.copyfile(template, path)
    return f"sqlite+aiosqlite:///{path}"


def in_thread(func: Callable[[], T]) -> T:
    """Run blocking set-up that starts its own event loop, even from inside a running one."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(func).result()


def _pg(url: str, name: str, sql: str) -> None:
    async def run() -> None:
        conn = await asyncpg.connect(
            url.replace("postgresql+asyncpg://", "postgresql://"), timeout=5
        )
        try:
            await conn.execute(sql.format(name=name))
        finally:
            await conn.close()

    in_thread(lambda: asyncio.run(run()))


def postgres_available() -> bool:
    try:
        _pg(PG_ADMIN_URL, "", "SELECT 1")
    except (OSError, asyncpg.PostgresError):
        return False
    return True


def create_postgres_database() -> str:
    """A new empty database for this run; skipped (or failed when `CI=true`) if unreachable."""
    if not postgres_available():
        if REQUIRED:
            pytest.fail(f"PostgreSQL is required when CI=true but {PG_ADMIN_URL} is unreachable")
        pytest.skip("PostgreSQL is not reachable")
    name = f"parley_test_{uuid.uuid4().hex[:12]}"
    _pg(PG_ADMIN_URL, name, 'CREATE DATABASE "{name}"')
    return PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://") + (
        "/" + name
    )


def drop_postgres_database(url: str) -> None:
    name = url.rsplit("/", 1)[1]
    _pg(PG_ADMIN_URL, name, 'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def truncate_postgres(url: str) -> None:
    _pg(url, "", "TRUNCATE users, conversations, messages CASCADE")
