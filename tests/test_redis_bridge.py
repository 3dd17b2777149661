"""Two (and three) real Parley processes sharing one database and a private Redis (issue 8)."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import httpx
import pytest
from httpx_sse import aconnect_sse
from websockets.asyncio.client import connect

from tests.accounts import new_conversation, sign_up
from tests.redis_server import QUICK_REDIS, RedisServer
from tests.server import Server, parley, running_server, server_env
from tests.ws.conftest import open_socket

pytestmark = pytest.mark.anyio
BASE = "/api/v1/chat/conversations"
QUESTION = "How do I reset my password?"
WAIT_S = 15


@pytest.fixture(name="env", scope="module")
def fixture_env(
    tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer
) -> dict[str, str]:
    # One var folder: the same SQLite database and JWT secret for every instance.
    env = server_env(
        tmp_path_factory.mktemp("cluster"),
        redis_url=redis_server.url,
        assistant_token_delay_ms="5",
        **QUICK_REDIS,
    )
    parley("migrate", env=env)
    return env


@pytest.fixture(name="http")
async def fixture_http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=WAIT_S) as client:
        yield client


async def send(http: httpx.AsyncClient, server: Server, me: dict[str, str], cid: str) -> None:
    """A message over REST, answered (201) once the reply is stored."""
    url = f"{server.url}{BASE}/{cid}/messages"
    assert (await http.post(url, json={"message": QUESTION}, headers=me)).status_code == 201


async def read_sse(
    http: httpx.AsyncClient,
    server: Server,
    me: dict[str, str],
    cid: str,
    ready: anyio.Event,
    last_event_id: str | None = None,
    until: str = "complete",
    count: int = 1,
) -> list[tuple[str, str]]:
    """(id, data) of a conversation's events on `server` until `count` of type `until`."""
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


def seqs(events: list[tuple[str, str]]) -> list[int]:
    return [json.loads(data)["seq"] for _, data in events if json.loads(data)["type"] != "reset"]


async def test_a_reply_on_a_streams_to_sse_and_websocket_on_b_as_the_same_bytes(
    http: httpx.AsyncClient, servers: tuple[Server, Server]
) -> None:
    a, b = servers
    token, me = await sign_up(http, a)
    cid = await new_conversation(http, a, me)
    ws_url = b.url.replace("http://", "ws://") + f"/ws/chat?token={token}"
    async with connect(ws_url, open_timeout=WAIT_S) as ws:
        await ws.send(json.dumps({"type": "subscribe", "conversation_id": cid}))
        sse_ready = anyio.Event()
        with anyio.fail_after(WAIT_S):
            async with anyio.create_task_group() as tg:
                sse: list[tuple[str, str]] = []

                async def on_b() -> None:
                    sse.extend(await read_sse(http, b, me, cid, sse_ready))

                tg.start_soon(on_b)
                await sse_ready.wait()
                # Frames are handled in order: the pong means the subscription is in place.
                await ws.send(json.dumps({"type": "ping"}))
                while json.loads(await ws.recv()).get("type") != "pong":
                    pass
                await send(http, a, me, cid)
                frames: list[str] = []
                while True:
                    frame = str(await ws.recv())
                    if "seq" in json.loads(frame):
                        frames.append(frame)
                        if json.loads(frame)["type"] == "complete":
                            break
    assert [data for _, data in sse] == frames
    assert [event_id for event_id, _ in sse] == [
        f"{json.loads(f)['epoch']}:{json.loads(f)['seq']}" for f in frames
    ]
    numbered = seqs(sse)
    assert numbered == list(range(numbered[0], numbered[0] + len(numbered)))


async def test_ids_continue_without_gaps_when_the_conversation_moves(
    http: httpx.AsyncClient, servers: tuple[Server, Server]
) -> None:
    a, b = servers
    _, me = await sign_up(http, a)
    cid = await new_conversation(http, a, me)
    ready = anyio.Event()
    with anyio.fail_after(WAIT_S):
        async with anyio.create_task_group() as tg:
            watched: list[tuple[str, str]] = []

            async def watch() -> None:
                watched.extend(await read_sse(http, a, me, cid, ready, count=3))

            tg.start_soon(watch)
            await ready.wait()
            await send(http, a, me, cid)
            await send(http, b, me, cid)  # one after the other: B's actor, A's numbering
            await send(http, a, me, cid)
    numbered = seqs(watched)
    assert numbered == list(range(numbered[0], numbered[0] + len(numbered)))
    assert len({event_id.split(":")[0] for event_id, _ in watched}) == 1


async def test_resume_on_b_after_the_instance_that_produced_the_events_was_killed(
    http: httpx.AsyncClient,
    servers: tuple[Server, Server],
    env: dict[str, str],
    tmp_path: Path,
) -> None:
    _, b = servers
    with running_server(env, tmp_path / "c.log") as c:
        _, me = await sign_up(http, c)
        cid = await new_conversation(http, c, me)
        ready = anyio.Event()
        with anyio.fail_after(WAIT_S):
            async with anyio.create_task_group() as tg:
                produced: list[tuple[str, str]] = []

                async def watch() -> None:
                    produced.extend(await read_sse(http, c, me, cid, ready))

                tg.start_soon(watch)
                await ready.wait()
                await send(http, c, me, cid)
        c.process.send_signal(signal.SIGKILL)
        c.process.wait()
    since = produced[2][0]
    with anyio.fail_after(WAIT_S):
        resumed = await read_sse(http, b, me, cid, anyio.Event(), last_event_id=since)
    assert resumed == produced[3:]


async def test_redis_down_each_instance_serves_its_own_then_delivery_comes_back(
    http: httpx.AsyncClient, servers: tuple[Server, Server], redis_server: RedisServer
) -> None:
    a, b = servers
    _, me = await sign_up(http, a)
    cid = await new_conversation(http, a, me)
    await send(http, a, me, cid)
    redis_server.stop()
    try:
        started = time.monotonic()
        # A keeps serving its own clients: a send-and-stream on A runs to `complete`.
        url = f"{a.url}{BASE}/{cid}/stream"
        with anyio.fail_after(WAIT_S):
            async with aconnect_sse(
                http, "GET", url, params={"message": QUESTION}, headers=me
            ) as s:
                during = [sse async for sse in s.aiter_sse()]
        assert json.loads(during[-1].data)["type"] == "complete"
        ready_a = (await http.get(a.url + "/readyz")).json()
        assert ready_a["checks"]["redis"] == "degraded" and ready_a["status"] == "ok"
        assert time.monotonic() - started < 10  # nothing hung on the missing Redis
    finally:
        redis_server.start()
    # Reconnected by itself: a reply on A reaches a subscriber on B again.
    with anyio.fail_after(WAIT_S):
        for server in servers:
            # Polling the public probe: there is no event to wait on from outside the process.
            while (await http.get(server.url + "/readyz")).json()["checks"]["redis"] != "ok":  # noqa: ASYNC110
                await anyio.sleep(0.1)
        async with anyio.create_task_group() as tg:
            on_b: list[tuple[str, str]] = []
            ready = anyio.Event()

            async def watch() -> None:
                on_b.extend(await read_sse(http, b, me, cid, ready))

            tg.start_soon(watch)
            await ready.wait()
            await send(http, a, me, cid)
    assert json.loads(on_b[-1][1])["type"] == "complete"
    # A client resuming from a position numbered during the outage gets `reset`.
    with anyio.fail_after(WAIT_S):
        resumed = await read_sse(http, b, me, cid, anyio.Event(), last_event_id=during[1].id)
    assert json.loads(resumed[0][1])["type"] == "reset"


async def test_typing_on_a_reaches_the_users_socket_on_b(
    http: httpx.AsyncClient, servers: tuple[Server, Server]
) -> None:
    a, b = servers
    token, _ = await sign_up(http, a)
    async with open_socket(a, token) as on_a, open_socket(b, token) as on_b:
        # The list change crossing to B shows B's socket is subscribed to the user's channel.
        created = await on_a.ask("create_conversation")
        await on_b.until(lambda f: f["type"] == "notification")
        await on_a.send("typing", conversation_id=created["id"])
        got = await on_b.until(lambda f: f["type"] == "typing")
    assert got[-1] == {"type": "typing", "conversation_id": created["id"]}
