"""Opening the one `databases.Database` of a process, with the backend's connection settings."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

from databases import Database, DatabaseURL


class _SQLiteConnection(sqlite3.Connection):
    """Every embedded connection enforces foreign keys and waits for the write lock."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Off by default in SQLite, per connection: without it ON DELETE CASCADE does nothing.
        self.execute("PRAGMA foreign_keys = ON")
        self.execute("PRAGMA busy_timeout = 30000")


def normalise_url(url: str) -> str:
    """Name the async driver explicitly, so `postgres://` URLs from hosting platforms work too."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url.removeprefix(prefix)
    if url.startswith("sqlite:///"):
        return "sqlite+aiosqlite:///" + url.removeprefix("sqlite:///")
    return url


def is_sqlite(url: str) -> bool:
    return DatabaseURL(url).dialect == "sqlite"


async def _release_as_is(connection: Any) -> None:
    """asyncpg's default reset on every release is a round trip (`RESET ALL`, `UNLISTEN *`,
    advisory unlocks) for session state we never set. An open transaction is still rolled
    back by the pool before this runs."""


def create_database(
    url: str, *, pool_size: int = 10, on_query: Callable[[float], None] | None = None
) -> Database:
    """Build the process's database handle; `connect()` is the caller's (the composition root).

    `on_query(seconds)` is told how long each PostgreSQL statement took (asyncpg's query
    logger, on every pooled connection); SQLite has no such hook.
    """
    url = normalise_url(url)
    if is_sqlite(url):
        return Database(url, factory=_SQLiteConnection)
    options: dict[str, Any] = {}
    if on_query is not None:

        async def init(connection: Any) -> None:
            connection.add_query_logger(lambda query: on_query(query.elapsed))

        options["init"] = init
    return Database(url, min_size=1, max_size=pool_size, reset=_release_as_is, **options)


def pool_usage(db: Database) -> tuple[int, int] | None:
    """Connections of the PostgreSQL pool (in use, open), or `None` without a pool (SQLite
    opens one per query)."""
    pool = getattr(db._backend, "_pool", None)
    if pool is None or not hasattr(pool, "get_idle_size"):
        return None
    size = pool.get_size()
    return size - pool.get_idle_size(), size


async def prepare(db: Database) -> None:
    """Per-database settings that persist in the file and only need setting once per start."""
    if is_sqlite(str(db.url)):
        # WAL lets readers go on while the one writer commits.
        await db.execute("PRAGMA journal_mode = WAL")


def url_from_environment() -> str:
    """`DATABASE_URL`, or the embedded SQLite file under the var folder (`PARLEY_VAR_DIR`)."""
    url = os.environ.get("DATABASE_URL", "").strip()
    if url:
        return url
    var_dir = Path(os.environ.get("PARLEY_VAR_DIR", "").strip() or "var")
    var_dir.mkdir(parents=True, exist_ok=True)
    return f"sqlite+aiosqlite:///{var_dir.resolve() / 'parley.db'}"
