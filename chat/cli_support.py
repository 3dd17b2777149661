"""What the command line needs around its commands: one-line errors and reading a password."""

from __future__ import annotations

import getpass
import sqlite3
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# The same bounds as registration (chat/schemas.py RegisterData).
MIN_PASSWORD, MAX_PASSWORD = 8, 128


class CommandError(Exception):
    """A command cannot go on; the message is one line for the user."""


def shown(url: str) -> str:
    """The database URL as it can be printed: without its password."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def _reason(error: BaseException) -> str:
    from sqlalchemy.exc import DBAPIError

    if isinstance(error, DBAPIError) and error.orig is not None:
        error = error.orig
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]


@contextmanager
def database_errors(url: str) -> Iterator[None]:
    """Turn a database that is missing, unreachable or not migrated into a `CommandError`."""
    # Imported here: `parley --version` and a bad setting need none of the database stack.
    import asyncpg
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import DBAPIError

    from storage.revision import SchemaMismatch

    if make_url(url).get_backend_name() == "sqlite":
        # aiosqlite fails to report a file it cannot open cleanly (a traceback from its
        # thread once the loop is gone), and a missing folder is the usual cause: check first.
        path = make_url(url).database
        folder = Path(path).parent if path else None
        if folder is not None and not folder.is_dir():
            raise CommandError(f"cannot open the SQLite database {path}: no folder {folder}")
    try:
        yield
    except SchemaMismatch as error:
        raise CommandError(str(error)) from None
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, sqlite3.Error) as error:
        raise CommandError(f"cannot use the database {shown(url)}: {_reason(error)}") from None
    except DBAPIError as error:
        raise CommandError(f"cannot use the database {shown(url)}: {_reason(error)}") from None


def read_password() -> str:
    """Prompted for twice at a terminal; otherwise one line from stdin (scripts, pipes)."""
    if sys.stdin.isatty():
        password = getpass.getpass("password: ")
        if getpass.getpass("password again: ") != password:
            raise CommandError("the two passwords differ")
    else:
        password = sys.stdin.readline().removesuffix("\n").removesuffix("\r")
    return check_password(password)


def check_password(password: str) -> str:
    """The password if registration would accept it; `CommandError` otherwise."""
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise CommandError(f"the password must be {MIN_PASSWORD} to {MAX_PASSWORD} characters long")
    return password
