"""`parley serve | migrate | create-user | user`: the service's command line.

A failure the user can act on (a bad setting, a database that is missing, unreachable or not
migrated, a port in use, a wrong password) ends the command with one line on stderr and a
non-zero exit code, never a traceback.
"""

from __future__ import annotations

import argparse
import errno
import logging
import secrets
import sys
import tomllib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.resources import files
from typing import TYPE_CHECKING

import anyio

from chat.cli_support import CommandError, check_password, database_errors, read_password
from chat.version import package_version

if TYPE_CHECKING:
    from alembic.config import Config as AlembicConfig
    from databases import Database
    from hypercorn.config import Config as HypercornConfig

    from chat.settings import Settings

DEMO_EMAIL = "demo@parley.local"
# What a failed bind says: another process has the port, the address is not this machine's,
# or the port needs privileges.
BIND_ERRORS = {errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES}


def alembic_config(settings: Settings) -> AlembicConfig:
    """Alembic's configuration for the shipped revisions and the configured database."""
    from alembic.config import Config

    from storage.revision import migrations_path

    config = Config()
    config.set_main_option("script_location", str(migrations_path()))
    config.attributes["database_url"] = settings.database
    return config


def migrate(settings: Settings, args: argparse.Namespace) -> int:
    """`parley migrate`: bring the database to the code's head revision."""
    from alembic import command

    with database_errors(settings.database):
        command.upgrade(alembic_config(settings), "head")
    print(f"database is at the latest revision ({settings.database.split('://')[0]})")
    return 0


@asynccontextmanager
async def migrated_database(settings: Settings) -> AsyncIterator[Database]:
    """A connection to the database, checked to be at the revision the code needs."""
    from storage.database import create_database
    from storage.revision import check_revision

    db = create_database(settings.database, pool_size=1)
    await db.connect()
    try:
        await check_revision(db)
        yield db
    finally:
        await db.disconnect()


async def _check_database(settings: Settings) -> None:
    async with migrated_database(settings):
        pass


async def _create_user(settings: Settings, email: str, password: str, name: str | None) -> bool:
    from chat.credentials import Passwords
    from storage.errors import Conflict
    from storage.users import insert_user

    async with migrated_database(settings) as db:
        try:
            await insert_user(
                db,
                email=email,
                password_hash=await Passwords.from_settings(settings).hash(password),
                display_name=name,
            )
        except Conflict:
            return False
        return True


def create_user(settings: Settings, args: argparse.Namespace) -> int:
    """`parley create-user`: a user with a password read from the terminal or stdin."""
    if args.demo:
        email, name, password = DEMO_EMAIL, "Demo", secrets.token_urlsafe(12)
    else:
        if not args.email:
            print("error: --email is required (or --demo)", file=sys.stderr)
            return 2
        email, name = args.email, args.display_name
        password = check_password(args.password) if args.password else read_password()
    with database_errors(settings.database):
        created = anyio.run(_create_user, settings, email, password, name)
    if not created:
        if args.demo:
            print(f"demo user {email} already exists (its password was printed when made)")
            return 0
        raise CommandError(f"a user with email {email} already exists")
    print(f"created user {email}" + (f" with password {password}" if args.demo else ""))
    return 0


async def _change_user(settings: Settings, email: str, change: str, password: str) -> None:
    from chat.credentials import Passwords
    from storage.users import select_user_by_email, update_user_active, update_user_password

    async with migrated_database(settings) as db:
        user = await select_user_by_email(db, email)
        if user is None:
            raise CommandError(f"there is no user with email {email}")
        if change == "set-password":
            password_hash = await Passwords.from_settings(settings).hash(password)
            await update_user_password(db, user.id, password_hash=password_hash)
        else:
            await update_user_active(db, user.id, is_active=change == "activate")


def change_user(settings: Settings, args: argparse.Namespace) -> int:
    """`parley user activate|deactivate|set-password EMAIL`."""
    password = read_password() if args.change == "set-password" else ""
    with database_errors(settings.database):
        anyio.run(_change_user, settings, args.email, args.change, password)
    done = {"activate": "activated", "deactivate": "deactivated", "set-password": "changed"}
    what = "the password of " if args.change == "set-password" else ""
    print(f"{done[args.change]} {what}user {args.email.strip().lower()}")
    return 0


def hypercorn_config(path: str) -> HypercornConfig:
    """Hypercorn's settings from a TOML file; `CommandError` if it cannot be read."""
    from hypercorn.config import Config as HypercornConfig

    try:
        return HypercornConfig.from_toml(path)
    except OSError as error:
        raise CommandError(f"cannot read {path}: {error.strerror}") from None
    except tomllib.TOMLDecodeError as error:
        raise CommandError(f"{path} is not valid TOML: {error}") from None


def serve(settings: Settings, args: argparse.Namespace) -> int:
    """`parley serve`: check the database, bind, serve until SIGINT/SIGTERM.

    With `--workers N` (N > 1) the parent binds and N worker processes serve (chat/workers.py).
    """
    if args.workers > 1 and not settings.redis_url:
        print(
            f"error: --workers {args.workers} needs REDIS_URL: each worker is an instance of "
            "its own, and instances share events, ids and replay only through Redis",
            file=sys.stderr,
        )
        return 2
    config = hypercorn_config(args.config)
    if args.bind:
        config.bind = args.bind
    # Before anything binds: a database the code cannot use fails here, in one line.
    with database_errors(settings.database):
        anyio.run(_check_database, settings)
    try:
        if args.workers > 1:
            from chat.workers import serve_workers

            return serve_workers(settings, config, config.create_sockets(), args.workers)
        from chat.root import serve as serve_app

        anyio.run(serve_app, settings, config, backend_options={"use_uvloop": True})
    except (OSError, BaseExceptionGroup) as error:
        bind_error = _bind_error(error)
        if bind_error is None:
            raise
        where = ", ".join(config.bind)
        raise CommandError(f"cannot listen on {where}: {bind_error.strerror}") from None
    return 0


def mcp_server(settings: Settings, args: argparse.Namespace) -> int:
    """`parley mcp-server`: Parley's support tools as an MCP server on stdin/stdout."""
    from chat.tools.server import run

    return run(settings)


def worker_count(value: str) -> int:
    """`--workers`: a whole number, 1 or more."""
    try:
        count = int(value)
    except ValueError:
        count = 0
    if count < 1:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number of 1 or more")
    return count


def _bind_error(error: BaseException) -> OSError | None:
    if isinstance(error, BaseExceptionGroup):
        for inner in error.exceptions:
            if (found := _bind_error(inner)) is not None:
                return found
        return None
    return error if isinstance(error, OSError) and error.errno in BIND_ERRORS else None


def start() -> Settings:
    """Settings from the environment and logging set up; exit 2 with a one-line error."""
    from chat.settings import SettingsError, load_settings

    try:
        settings = load_settings()
    except SettingsError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    configure_logging(settings.log_level, settings.log_format)
    return settings


def configure_logging(level: str, format: str = "text") -> None:
    """Log lines to stderr, each with its process id (one of several `--workers`) and the
    request id (`LOG_FORMAT=json`: JSON lines)."""
    from chat import logs

    logs.configure_logging(level, format)
    # Alembic names each of its plugins at INFO on every start: noise, not progress.
    if level != "DEBUG":
        logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="parley", description=__doc__.split("\n")[0])
    parser.add_argument("--version", action="version", version=f"parley {package_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    p_serve = sub.add_parser("serve", help="serve the API with Hypercorn")
    p_serve.add_argument("--bind", action="append", help="host:port (repeatable)")
    p_serve.add_argument(
        "--config",
        default=str(files("chat") / "hypercorn.toml"),
        help="Hypercorn settings (default: the hypercorn.toml shipped with Parley)",
    )
    p_serve.add_argument(
        "--workers",
        type=worker_count,
        default=1,
        metavar="N",
        help="instance processes sharing the port (N > 1 needs REDIS_URL; default 1)",
    )
    p_serve.set_defaults(run=serve)
    sub.add_parser("migrate", help="apply the database migrations").set_defaults(run=migrate)
    sub.add_parser(
        "mcp-server", help="serve Parley's support tools over MCP on stdin/stdout"
    ).set_defaults(run=mcp_server)
    p_create = sub.add_parser("create-user", help="create a user")
    p_create.add_argument("--email")
    p_create.add_argument("--password", help="prompted for (or read from stdin) when left out")
    p_create.add_argument("--display-name")
    p_create.add_argument("--demo", action="store_true", help="the demo user, random password")
    p_create.set_defaults(run=create_user)
    p_user = sub.add_parser("user", help="change an existing user")
    changes = p_user.add_subparsers(dest="change", required=True)
    changes.add_parser("activate", help="let the user sign in again")
    changes.add_parser("deactivate", help="refuse the user's sign-ins and tokens")
    changes.add_parser(
        "set-password", help="prompted for twice, or one line from stdin when it is not a terminal"
    )
    for change in changes.choices.values():
        change.add_argument("email", metavar="EMAIL")
    p_user.set_defaults(run=change_user)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    settings = start()
    try:
        code: int = args.run(settings, args)
    except CommandError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
