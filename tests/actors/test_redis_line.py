"""The publisher's own connection (actors/redis_line.py) against a private redis-server."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import anyio
import pytest
import redis.asyncio
from redis.exceptions import ConnectionError, ResponseError

from actors.bridge import connect_redis
from actors.redis_line import Line
from tests.redis_server import RedisServer, running_redis

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # redis-py runs on asyncio


@pytest.fixture(name="redis_server")
def fixture_redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with running_redis(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture(name="line")
async def fixture_line(redis_server: RedisServer) -> AsyncIterator[Line]:
    client = connect_redis(redis_server.url, 2.0)
    line = Line(client)
    try:
        yield line
    finally:
        await line.aclose()
        await client.aclose()


async def test_answers_come_back_in_order_on_one_connection(line: Line) -> None:
    answers = await line.call([("SET", "k", "v"), ("GET", "k"), ("CLIENT", "ID")])
    again = await line.call([("CLIENT", "ID")])
    assert answers[:2] == [b"OK", b"v"]
    assert again == answers[2:], "a second call reuses the connection"


async def test_an_error_answer_raises_and_the_next_call_starts_clean(line: Line) -> None:
    with pytest.raises(ResponseError):
        await line.call([("EVALSHA", "0" * 40, 0), ("PING",)])
    # The PING's answer was never read: reusing that connection would hand it to the next
    # call. A fresh connection answers this call's own command.
    assert await line.call([("ECHO", "mine")]) == [b"mine"]


async def test_a_killed_connection_fails_one_call_and_the_next_reconnects(
    line: Line, redis_server: RedisServer
) -> None:
    [own_id] = await line.call([("CLIENT", "ID")])
    admin = redis.asyncio.Redis.from_url(redis_server.url)
    try:
        await admin.execute_command("CLIENT", "KILL", "ID", own_id)
    finally:
        await admin.aclose()
    with pytest.raises(ConnectionError):
        await line.call([("PING",)])
    [new_id] = await line.call([("CLIENT", "ID")])
    assert new_id != own_id


async def test_a_call_cut_by_its_deadline_leaves_no_late_answer_behind(line: Line) -> None:
    with anyio.move_on_after(0.2) as scope:
        await line.call([("BLPOP", "nothing-here", 1)])
    assert scope.cancelled_caught
    # Had the connection been kept, BLPOP's late nil would answer this call.
    assert await line.call([("ECHO", "after")]) == [b"after"]
