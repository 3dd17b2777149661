"""Two (and three) real Parley processes sharing one database and a private Redis (issue 8)."""

from __future__ import annotations

import json
import time

import anyio
import httpx
import pytest
from httpx_sse import aconnect_sse
from websockets.asyncio.client import connect

from tests.accounts import BASE, new_conversation, sign_up
from tests.cluster import (
    QUESTION,
    cluster_env,
    events_while,
    kill,
    new_user_conversation,
    read_sse,
    send_ok,
    seqs,
    without_gaps,
)
from tests.redis_server import QUICK_REDIS, RedisServer
from tests.server import Server
from tests.ws.conftest import open_socket

pytestmark = pytest.mark.anyio
WAIT_S = 15


@pytest.fixture(name="env", scope="module")
def fixture_env(
    tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer
) -> dict[str, str]:
    # SQLite: the instances share the var folder's database.
    return cluster_env(
        tmp_path_factory.mktemp("cluster"),
        redis_server,
        assistant_token_delay_ms="5",
        **QUICK_REDIS,
    )


async def test_a_reply_on_a_streams_to_sse_and_websocket_on_b_as_the_same_bytes(
    http: httpx.AsyncClient, servers: tuple[Server, Server]
) -> None:
    a, b = servers
    token, me = await sign_up(http, a)
    cid = await new_conversation(http, a, me)
    ws_url = b.url.replace("http://", "ws://") + f"/ws/chat?token={token}"
    frames: list[str] = []
    async with connect(ws_url, open_timeout=WAIT_S) as ws:
        await ws.send(json.dumps({"type": "subscribe", "conversation_id": cid}))

        async def send_on_a_and_read_the_socket() -> None:
            # Frames are handled in order: the pong means the subscription is in place.
            await ws.send(json.dumps({"type": "ping"}))
            while json.loads(await ws.recv()).get("type") != "pong":
                pass
            await send_ok(http, a, me, cid)
            while True:
                frame = str(await ws.recv())
                if "seq" in json.loads(frame):
                    frames.append(frame)
                    if json.loads(frame)["type"] == "complete":
                        break

        with anyio.fail_after(WAIT_S):
            sse = await events_while(http, b, me, cid, send_on_a_and_read_the_socket)
    assert [data for _, data in sse] == frames
    assert [event_id for event_id, _ in sse] == [
        f"{json.loads(f)['epoch']}:{json.loads(f)['seq']}" for f in frames
    ]
    assert without_gaps(seqs(sse))


async def test_ids_continue_without_gaps_when_the_conversation_moves(
    http: httpx.AsyncClient, servers: tuple[Server, Server]
) -> None:
    a, b = servers
    me, cid = await new_user_conversation(http, a)

    async def on_a_then_b_then_a() -> None:
        await send_ok(http, a, me, cid)
        await send_ok(http, b, me, cid)  # one after the other: B's actor, A's numbering
        await send_ok(http, a, me, cid)

    with anyio.fail_after(WAIT_S):
        watched = await events_while(http, a, me, cid, on_a_then_b_then_a, count=3)
    assert without_gaps(seqs(watched))
    assert len({event_id.split(":")[0] for event_id, _ in watched}) == 1


async def test_resume_on_b_after_the_instance_that_produced_the_events_was_killed(
    http: httpx.AsyncClient, servers: tuple[Server, Server], third: Server
) -> None:
    _, b = servers
    me, cid = await new_user_conversation(http, third)
    with anyio.fail_after(WAIT_S):
        produced = await events_while(http, third, me, cid, lambda: send_ok(http, third, me, cid))
    kill(third)
    since = produced[2][0]
    with anyio.fail_after(WAIT_S):
        resumed = await read_sse(http, b, me, cid, anyio.Event(), last_event_id=since)
    assert resumed == produced[3:]


async def test_redis_down_each_instance_serves_its_own_then_delivery_comes_back(
    http: httpx.AsyncClient, servers: tuple[Server, Server], redis_server: RedisServer
) -> None:
    a, b = servers
    me, cid = await new_user_conversation(http, a)
    await send_ok(http, a, me, cid)
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
        on_b = await events_while(http, b, me, cid, lambda: send_ok(http, a, me, cid))
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
