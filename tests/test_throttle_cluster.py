"""Two Parley processes with a private Redis draw on one budget (sign-in attempts, messages),
and with Redis stopped they still answer (counting in each instance, the failures counted)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests import databases
from tests.redis_server import QUICK_REDIS, RedisServer, running_redis
from tests.server import Server, parley, running_pair, server_env

pytestmark = pytest.mark.anyio
BASE = "/api/v1/chat/conversations"
PASSWORD = "password-1"


@pytest.fixture(name="redis", scope="module")
def fixture_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    # Its own server: this module stops it.
    with running_redis(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture(name="pair", scope="module")
def fixture_pair(
    tmp_path_factory: pytest.TempPathFactory, redis: RedisServer
) -> Iterator[tuple[Server, Server]]:
    url = databases.create_postgres_database()
    env = server_env(
        tmp_path_factory.mktemp("limits"),
        database_url=url,
        redis_url=redis.url,
        assistant_token_delay_ms="0",
        auth_rate_per_email="3/minute",
        user_message_rate="4/minute",
        metrics_enabled="true",
        **QUICK_REDIS,
    )
    parley("migrate", env=env)
    try:
        with running_pair(env, tmp_path_factory.mktemp("logs")) as pair:
            yield pair
    finally:
        databases.drop_postgres_database(url)


@pytest.fixture(name="http")
async def fixture_http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=30) as client:
        yield client


async def sign_up(http: httpx.AsyncClient, server: Server) -> tuple[str, dict[str, str]]:
    email = f"c-{uuid.uuid4().hex[:10]}@example.com"
    body = {"email": email, "password": PASSWORD}
    assert (await http.post(server.url + "/auth/register", json=body)).status_code == 201
    login = await http.post(server.url + "/auth/login", json=body)
    assert login.status_code == 200
    return email, {"Authorization": f"Bearer {login.json()['access_token']}"}


async def send(http: httpx.AsyncClient, server: Server, me: dict[str, str], cid: str) -> int:
    url = f"{server.url}{BASE}/{cid}/messages"
    response = await http.post(url, json={"message": "Hi"}, headers=me)
    return int(response.status_code)


async def storage_errors(http: httpx.AsyncClient, server: Server) -> float:
    text = (await http.get(server.url + "/metrics")).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "parley_rate_limit_storage_errors_total":
                return sample.value
    return 0.0


async def test_two_instances_share_one_budget(
    pair: tuple[Server, Server], http: httpx.AsyncClient
) -> None:
    a, b = pair
    email, me = await sign_up(http, a)
    cid = str((await http.post(a.url + BASE, json={}, headers=me)).json()["id"])
    # Four messages, two through each instance, then neither takes a fifth.
    assert [await send(http, s, me, cid) for s in (a, b, a, b)] == [201] * 4
    assert await send(http, a, me, cid) == 429
    assert await send(http, b, me, cid) == 429
    # Sign-in attempts for one email: registration and login were two; one more on B is the
    # third; past it both refuse, whichever is asked.
    wrong = {"email": email, "password": "wrong"}
    assert (await http.post(b.url + "/auth/login", json=wrong)).status_code == 401
    assert (await http.post(a.url + "/auth/login", json=wrong)).status_code == 429
    assert (await http.post(b.url + "/auth/login", json=wrong)).status_code == 429


async def test_with_redis_stopped_requests_still_succeed(
    pair: tuple[Server, Server], http: httpx.AsyncClient, redis: RedisServer
) -> None:
    a, b = pair
    before = await storage_errors(http, a)
    redis.stop()
    try:
        # Registration, sign-in and messages go on (each instance counts on its own).
        for server in (a, b):
            _, me = await sign_up(http, server)
            cid = str((await http.post(server.url + BASE, json={}, headers=me)).json()["id"])
            assert await send(http, server, me, cid) == 201
        assert await storage_errors(http, a) > before
    finally:
        redis.start()
