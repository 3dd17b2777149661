"""Two Parley processes with a private Redis draw on one budget (sign-in attempts, messages),
and with Redis stopped they still answer (counting in each instance, the failures counted)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests import databases
from tests.accounts import new_conversation
from tests.cluster import cluster_env, send
from tests.redis_server import QUICK_REDIS, RedisServer
from tests.server import Server

pytestmark = pytest.mark.anyio
PASSWORD = "password-1"


@pytest.fixture(name="env", scope="module")
def fixture_env(
    tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer
) -> Iterator[dict[str, str]]:
    url = databases.create_postgres_database()
    try:
        yield cluster_env(
            tmp_path_factory.mktemp("limits"),
            redis_server,
            database_url=url,
            assistant_token_delay_ms="0",
            auth_rate_per_email="3/minute",
            user_message_rate="4/minute",
            metrics_enabled="true",
            **QUICK_REDIS,
        )
    finally:
        databases.drop_postgres_database(url)


async def sign_up(http: httpx.AsyncClient, server: Server) -> tuple[str, dict[str, str]]:
    email = f"c-{uuid.uuid4().hex[:10]}@example.com"
    body = {"email": email, "password": PASSWORD}
    assert (await http.post(server.url + "/auth/register", json=body)).status_code == 201
    login = await http.post(server.url + "/auth/login", json=body)
    assert login.status_code == 200
    return email, {"Authorization": f"Bearer {login.json()['access_token']}"}


async def status(http: httpx.AsyncClient, server: Server, me: dict[str, str], cid: str) -> int:
    """The status a message over REST is answered with."""
    return (await send(http, server, me, cid, "Hi")).status_code


async def storage_errors(http: httpx.AsyncClient, server: Server) -> float:
    text = (await http.get(server.url + "/metrics")).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "parley_rate_limit_storage_errors_total":
                return sample.value
    return 0.0


async def test_two_instances_share_one_budget(
    servers: tuple[Server, Server], http: httpx.AsyncClient
) -> None:
    a, b = servers
    email, me = await sign_up(http, a)
    cid = await new_conversation(http, a, me)
    # Four messages, two through each instance, then neither takes a fifth.
    assert [await status(http, s, me, cid) for s in (a, b, a, b)] == [201] * 4
    assert await status(http, a, me, cid) == 429
    assert await status(http, b, me, cid) == 429
    # Sign-in attempts for one email: registration and login were two; one more on B is the
    # third; past it both refuse, whichever is asked.
    wrong = {"email": email, "password": "wrong"}
    assert (await http.post(b.url + "/auth/login", json=wrong)).status_code == 401
    assert (await http.post(a.url + "/auth/login", json=wrong)).status_code == 429
    assert (await http.post(b.url + "/auth/login", json=wrong)).status_code == 429


async def test_with_redis_stopped_requests_still_succeed(
    servers: tuple[Server, Server], http: httpx.AsyncClient, redis_server: RedisServer
) -> None:
    a, b = servers
    before = await storage_errors(http, a)
    redis_server.stop()
    try:
        # Registration, sign-in and messages go on (each instance counts on its own).
        for server in (a, b):
            _, me = await sign_up(http, server)
            cid = await new_conversation(http, server, me)
            assert await status(http, server, me, cid) == 201
        assert await storage_errors(http, a) > before
    finally:
        redis_server.start()
