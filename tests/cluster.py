"""Helpers of the tests that run several Parley processes on one private Redis (and one
database): their environment, and the REST and SSE calls they make on one instance or another."""

from __future__ import annotations

import json
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import httpx
from httpx_sse import aconnect_sse

from tests.accounts import BASE, HasURL, new_conversation, sign_up
from tests.redis_server import RedisServer
from tests.server import Server, parley, server_env

QUESTION = "How do I reset my password?"


def cluster_env(tmp: Path, redis_server: RedisServer, **settings: str) -> dict[str, str]:
    """The environment of every instance of one cluster, its database migrated: one var folder
    (the same JWT secret, and the same SQLite database unless `database_url` names another)
    and the private Redis."""
    env = server_env(tmp, redis_url=redis_server.url, **settings)
    parley("migrate", env=env)
    return env


def kill(server: Server) -> None:
    """SIGKILL an instance, as a crash would end it, and reap it."""
    server.process.send_signal(signal.SIGKILL)
    server.process.wait()


async def new_user_conversation(
    http: httpx.AsyncClient, server: HasURL
) -> tuple[dict[str, str], str]:
    """A new user's `Authorization` header and a new conversation of theirs."""
    _, me = await sign_up(http, server)
    return me, await new_conversation(http, server, me)


async def send(
    http: httpx.AsyncClient, server: HasURL, me: dict[str, str], cid: str, text: str = QUESTION
) -> httpx.Response:
    """A message over REST, answered (201) once the reply is stored."""
    url = f"{server.url}{BASE}/{cid}/messages"
    return await http.post(url, json={"message": text}, headers=me)


async def send_ok(
    http: httpx.AsyncClient, server: HasURL, me: dict[str, str], cid: str, text: str = QUESTION
) -> None:
    """`send`, which must be answered 201."""
    assert (await send(http, server, me, cid, text)).status_code == 201


async def read_sse(
    http: httpx.AsyncClient,
    server: HasURL,
    me: dict[str, str],
    cid: str,
    ready: anyio.Event,
    last_event_id: str | None = None,
    until: str = "complete",
    count: int = 1,
) -> list[tuple[str, str]]:
    """(id, data) of a conversation's events on `server` (route 8) until `count` of type
    `until`, or a `reset`; `ready` is set once the stream is open."""
    headers = me | ({"Last-Event-ID": last_event_id} if last_event_id else {})
    got = []
    url = f"{server.url}{BASE}/{cid}/events"
    async with aconnect_sse(http, "GET", url, headers=headers) as source:
        ready.set()
        async for sse in source.aiter_sse():
            got.append((sse.id, sse.data))
            kind = json.loads(sse.data)["type"]
            count -= kind == until
            if count == 0 or kind == "reset":
                break
    return got


async def events_while(
    http: httpx.AsyncClient,
    server: HasURL,
    me: dict[str, str],
    cid: str,
    action: Callable[[], Awaitable[object]],
    count: int = 1,
) -> list[tuple[str, str]]:
    """`read_sse` on `server` until `count` replies completed, with `action` run (in this task)
    once the stream is open: the events it caused, and any from elsewhere meanwhile."""
    got: list[tuple[str, str]] = []
    ready = anyio.Event()

    async def read() -> None:
        got.extend(await read_sse(http, server, me, cid, ready, count=count))

    async with anyio.create_task_group() as tg:
        tg.start_soon(read)
        await ready.wait()
        await action()
    return got


@asynccontextmanager
async def streaming(
    http: httpx.AsyncClient, server: HasURL, me: dict[str, str], cid: str, text: str = QUESTION
) -> AsyncIterator[AsyncIterator[str]]:
    """Route 7 on `server`: `text` sent, and the data of each event of its reply as it comes."""
    url = f"{server.url}{BASE}/{cid}/stream"
    async with aconnect_sse(http, "GET", url, params={"message": text}, headers=me) as source:
        yield (sse.data async for sse in source.aiter_sse())


async def first_chunk(source: AsyncIterator[str]) -> str:
    """Read a send-and-stream response up to its first chunk; the reply's id."""
    async for data in source:
        event = json.loads(data)
        if event["type"] == "chunk":
            return str(event["message_id"])
    raise AssertionError("the stream ended without a chunk")


def seqs(events: Sequence[tuple[str, str]]) -> list[int]:
    """The `seq` of each event read by `read_sse`, a `reset` left out."""
    return [json.loads(data)["seq"] for _, data in events if json.loads(data)["type"] != "reset"]


def without_gaps(numbers: Sequence[int]) -> bool:
    """Whether `numbers` count up by one from the first."""
    return list(numbers) == list(range(numbers[0], numbers[0] + len(numbers)))
