"""The database's schema revision against the code's: Alembic's scripts and its version table.

The scripts ship as the `migrations` package (the repository's top-level folder), so an
installed Parley finds them wherever it runs from. Wheels install unzipped, so the package is
a real folder that Alembic can read.
"""

from __future__ import annotations

import sqlite3
from functools import cache
from importlib.resources import files
from pathlib import Path

import asyncpg
from alembic.script import ScriptDirectory
from databases import Database


class SchemaMismatch(Exception):
    """The database is not at the revision this code needs; the message is one readable line."""


def migrations_path() -> Path:
    """The Alembic scripts folder (env.py, versions/)."""
    return Path(str(files("migrations")))


@cache
def _scripts() -> ScriptDirectory:
    return ScriptDirectory(str(migrations_path()))


def head_revision() -> str:
    """The revision the code needs: the newest in versions/ (the history is one line)."""
    head = _scripts().get_current_head()
    if head is None:
        raise RuntimeError(f"no Alembic revisions in {migrations_path()}")
    return head


def known_revisions() -> set[str]:
    return {script.revision for script in _scripts().walk_revisions()}


async def database_revision(db: Database) -> str | None:
    """The revision the database is at; `None` when it was never migrated."""
    try:
        rows = await db.fetch_all("SELECT version_num FROM alembic_version")
    except asyncpg.UndefinedTableError:
        return None
    except sqlite3.OperationalError as error:
        if "no such table" not in str(error):
            raise
        return None
    return ",".join(sorted(row[0] for row in rows)) or None


def mismatch(current: str | None) -> str | None:
    """What is wrong with a database at `current`, in one line; `None` when it is at the head."""
    head = head_revision()
    if current == head:
        return None
    if current is None or current in known_revisions():
        at = current or "none"
        return f'the database is at revision {at}, the code needs {head}; run "parley migrate"'
    # Migrated by a newer Parley: migrating with this one cannot help.
    return (
        f"the database is at revision {current}, which this version of Parley does not know "
        f"(it needs {head}); run the Parley that migrated it"
    )


async def check_revision(db: Database) -> None:
    """`SchemaMismatch` unless the database is at the code's head revision."""
    problem = mismatch(await database_revision(db))
    if problem is not None:
        raise SchemaMismatch(problem)
