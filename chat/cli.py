"""`parley serve | migrate | create-user`: the service's command line."""

from __future__ import annotations

import argparse
import getpass
import logging
import secrets
import sys
from pathlib import Path

import anyio
from alembic import command
from alembic.config import Config as AlembicConfig
from hypercorn.config import Config as HypercornConfig

from chat.settings import Settings, SettingsError, load_settings

ROOT = Path(__file__).resolve().parent.parent
DEMO_EMAIL = "demo@parley.local"


def alembic_config(settings: Settings) -> AlembicConfig:
    config = AlembicConfig()
    config.set_main_option("script_location", str(ROOT / "migrations"))
    config.attributes["database_url"] = settings.database
    return config


def migrate(settings: Settings) -> None:
    command.upgrade(alembic_config(settings), "head")
    print(f"database is at the latest revision ({settings.database.split('://')[0]})")


async def _create_user(settings: Settings, email: str, password: str, name: str | None) -> bool:
    from chat.credentials import Passwords
    from storage.database import create_database
    from storage.errors import Conflict
    from storage.users import insert_user

    db = create_database(settings.database)
    await db.connect()
    try:
        await insert_user(
            db,
            email=email,
            password_hash=await Passwords.from_settings(settings).hash(password),
            display_name=name,
        )
        return True
    except Conflict:
        return False
    finally:
        await db.disconnect()


def create_user(settings: Settings, args: argparse.Namespace) -> int:
    if args.demo:
        email, name, password = DEMO_EMAIL, "Demo", secrets.token_urlsafe(12)
    else:
        email, name = args.email, args.display_name
        password = args.password or getpass.getpass("password: ")
        if not email:
            print("error: --email is required (or --demo)", file=sys.stderr)
            return 2
        if len(password) < 8:
            print("error: the password must be at least 8 characters", file=sys.stderr)
            return 2
    created = anyio.run(_create_user, settings, email, password, name)
    if not created:
        if args.demo:
            print(f"demo user {email} already exists (its password was printed when made)")
            return 0
        print(f"error: a user with email {email} already exists", file=sys.stderr)
        return 1
    print(f"created user {email}" + (f" with password {password}" if args.demo else ""))
    return 0


def serve(settings: Settings, bind: list[str] | None, config_path: str) -> None:
    from chat.root import serve as serve_app

    config = HypercornConfig.from_toml(config_path)
    if bind:
        config.bind = bind
    anyio.run(serve_app, settings, config, backend_options={"use_uvloop": True})


def start() -> Settings:
    """Settings from the environment and logging set up; exit 2 with a one-line error."""
    try:
        settings = load_settings()
    except SettingsError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    return settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="parley", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p_serve = sub.add_parser("serve", help="serve the API with Hypercorn")
    p_serve.add_argument("--bind", action="append", help="host:port (repeatable)")
    p_serve.add_argument("--config", default=str(ROOT / "hypercorn.toml"))
    sub.add_parser("migrate", help="apply the database migrations")
    p_user = sub.add_parser("create-user", help="create a user")
    p_user.add_argument("--email")
    p_user.add_argument("--password", help="prompted for when left out")
    p_user.add_argument("--display-name")
    p_user.add_argument("--demo", action="store_true", help="the demo user, random password")
    args = parser.parse_args(argv)
    settings = start()
    if args.command == "serve":
        serve(settings, args.bind, args.config)
    elif args.command == "migrate":
        migrate(settings)
    else:
        return create_user(settings, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
