"""Fixtures: settings, a real database (SQLite, and PostgreSQL when reachable), the app."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from databases import Database
from quart import Quart
from quart.typing import TestClientProtocol as Client

from chat.app import create_app
from chat.root import running_services
from chat.services import Services
from chat.settings import Settings, load_settings
from storage.database import create_database
from tests import databases
from tests.redis_server import RedisServer, running_redis
from tests.server import Server, running_pair, running_server

SECRET = "test-secret-" + "x" * 40


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return databases.sqlite_template(tmp_path_factory.mktemp("template"))


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    url = databases.create_postgres_database()
    databases.migrate(url)
    yield url
    databases.drop_postgres_database(url)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, sqlite_template: Path, tmp_path: Path) -> str:
    """A migrated, empty database of each backend."""
    if request.param == "sqlite":
        return databases.sqlite_copy(sqlite_template, tmp_path)
    url: str = request.getfixturevalue("postgres_url")
    databases.truncate_postgres(url)
    return url


def make_settings(tmp_path: Path, database_url: str, **overrides: Any) -> Settings:
    environ = {
        "PARLEY_VAR_DIR": str(tmp_path / "var"),
        "DATABASE_URL": database_url,
        "JWT_SECRET": SECRET,
        "ASSISTANT_TOKEN_DELAY_MS": "0",
        "PASSWORD_HASH_TIME_COST": "1",
        "PASSWORD_HASH_MEMORY_KIB": "64",
        **{k.upper(): str(v) for k, v in overrides.items()},
    }
    return load_settings(environ)


@pytest.fixture(name="redis_server", scope="module")
def fixture_redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A private redis-server for the module (the shared one on 6379 is never flushed)."""
    with running_redis(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture(name="servers", scope="module")
def fixture_servers(
    env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Server, Server]]:
    """Two instances of one cluster, run with the module's own `env` fixture."""
    with running_pair(env, tmp_path_factory.mktemp("logs")) as servers:
        yield servers


@pytest.fixture(name="third")
def fixture_third(env: dict[str, str], tmp_path: Path) -> Iterator[Server]:
    """A third instance of the module's cluster, for one test (which may kill or pause it)."""
    with running_server(env, tmp_path / "c.log") as server:
        yield server


@pytest.fixture(name="http")
async def fixture_http() -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client for tests against real server processes (each test bounds its own waits
    with `fail_after`; the timeout only ends a request nobody answers)."""
    async with httpx.AsyncClient(timeout=30) as client:
        yield client


@pytest.fixture(name="db")
async def fixture_db(database_url: str) -> AsyncIterator[Database]:
    """A connection pool on a migrated, empty database of each backend, without the app."""
    db = create_database(database_url)
    await db.connect()
    try:
        yield db
    finally:
        await db.disconnect()


@pytest.fixture(name="settings")
def fixture_settings(tmp_path: Path, database_url: str) -> Settings:
    return make_settings(tmp_path, database_url)


@pytest.fixture(name="services")
async def fixture_services(settings: Settings) -> AsyncIterator[Services]:
    async with running_services(settings) as services:
        yield services


@pytest.fixture(name="app")
async def fixture_app(services: Services) -> AsyncIterator[Quart]:
    app = create_app(services)
    async with app.test_app():
        yield app


@pytest.fixture(name="client")
def fixture_client(app: Quart) -> Client:
    return app.test_client()


Register = Callable[..., Awaitable[dict[str, str]]]


@pytest.fixture(name="register")
def fixture_register(client: Client) -> Register:
    """Register and log in a new user; returns its auth headers (and id under `user_id`)."""

    async def register(email: str | None = None, password: str = "correct horse") -> dict[str, str]:
        email = email or f"user-{uuid.uuid4().hex[:8]}@example.com"
        response = await client.post("/auth/register", json={"email": email, "password": password})
        assert response.status_code == 201, await response.get_data(as_text=True)
        user = await response.get_json()
        response = await client.post("/auth/login", json={"email": email, "password": password})
        assert response.status_code == 200
        token = (await response.get_json())["access_token"]
        return {"Authorization": f"Bearer {token}", "user_id": user["id"]}

    return register


def auth(headers: dict[str, str]) -> dict[str, str]:
    return {"Authorization": headers["Authorization"]}
