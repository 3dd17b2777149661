"""Exceptions raised by the storage layer, and the one mapping of driver integrity errors to them.

SQLite (through aiosqlite) and PostgreSQL (through asyncpg) report the same broken rule with
different exception classes; callers above `storage/` only ever see the classes below.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager

import asyncpg


class StorageError(Exception):
    """Base class of the storage layer's own errors."""


class NotFound(StorageError):
    """The row does not exist, is soft-deleted, or belongs to another user."""


class Conflict(StorageError):
    """The write would break a uniqueness rule (for example an email already registered)."""


class UnsupportedDialect(StorageError):
    """The database URL names a backend `storage/` has no compiled statements for."""


# SQLite's extended result codes (Python 3.11 exposes them as `sqlite_errorname`).
_SQLITE_UNIQUE = {"SQLITE_CONSTRAINT_UNIQUE", "SQLITE_CONSTRAINT_PRIMARYKEY"}
_SQLITE_FOREIGN_KEY = {"SQLITE_CONSTRAINT_FOREIGNKEY"}


@contextmanager
def integrity_errors(*, conflict: str, missing: str) -> Iterator[None]:
    """Turn a unique violation into `Conflict(conflict)` and a foreign-key violation into
    `NotFound(missing)`, the same on both backends. Other integrity errors (CHECK, NOT NULL)
    are bugs in our own writes and pass through unchanged."""
    try:
        yield
    except asyncpg.UniqueViolationError as error:
        raise Conflict(conflict) from error
    except asyncpg.ForeignKeyViolationError as error:
        raise NotFound(missing) from error
    except sqlite3.IntegrityError as error:
        name = getattr(error, "sqlite_errorname", "")
        if name in _SQLITE_UNIQUE:
            raise Conflict(conflict) from error
        if name in _SQLITE_FOREIGN_KEY:
            raise NotFound(missing) from error
        raise


class Fenced(StorageError):
    """The write came from a lease holder whose fencing number is stale (another instance's
    actor took the conversation over): nothing was written."""
