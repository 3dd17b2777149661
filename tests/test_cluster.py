"""One live actor per conversation across instances (issue 8, item 3): the lease in Redis,
forwarding to its holder, take-over after the holder died, and fencing of a stale holder's
writes. Real Parley processes on PostgreSQL and a private redis-server."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio
import httpx
import pytest
import redis.asyncio

from tests import databases
from tests.accounts import BASE, new_conversation, sign_up
from tests.cluster import (
    cluster_env,
    events_while,
    first_chunk,
    kill,
    new_user_conversation,
    send,
    send_ok,
    streaming,
)
from tests.redis_server import QUICK_REDIS, RedisServer
from tests.server import Server, running_server

pytestmark = pytest.mark.anyio
WAIT_S = 20
LEASE_S = 2
TERMINAL = ("complete", "cancelled", "error")


@pytest.fixture(name="env", scope="module")
def fixture_env(
    tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer
) -> Iterator[dict[str, str]]:
    url = databases.create_postgres_database()
    yield cluster_env(
        tmp_path_factory.mktemp("cluster"),
        redis_server,
        database_url=url,
        # Slow enough to act on a reply while it runs.
        assistant_token_delay_ms="20",
        **QUICK_REDIS,
        actor_lease_s=str(LEASE_S),
    )
    databases.drop_postgres_database(url)


@pytest.fixture(name="lease_keys")
async def fixture_lease_keys(redis_server: RedisServer) -> AsyncIterator[redis.asyncio.Redis]:
    client = redis.asyncio.Redis.from_url(redis_server.url)
    yield client
    await client.aclose()


async def stored(
    http: httpx.AsyncClient, server: Server, me: dict[str, str], cid: str
) -> list[dict[str, object]]:
    response = await http.get(f"{server.url}{BASE}/{cid}/messages?limit=100", headers=me)
    assert response.status_code == 200
    items: list[dict[str, object]] = response.json()["items"]
    return items


async def wait_lease_gone(lease_keys: redis.asyncio.Redis, cid: str) -> None:
    """Until the conversation's lease expired in Redis (its holder stopped renewing it)."""
    # Polling the private Redis: an expiry has no event to wait on from outside.
    while await lease_keys.exists(f"parley:l:{cid}"):  # noqa: ASYNC110
        await anyio.sleep(0.05)


async def test_concurrent_sends_on_a_and_b_are_answered_by_one_actor_in_order(
    http: httpx.AsyncClient, servers: tuple[Server, Server]
) -> None:
    a, b = servers
    me, cid = await new_user_conversation(http, a)
    each = 3

    async def on_a_and_b_at_once() -> None:
        async with anyio.create_task_group() as senders:
            for i in range(each):
                for server, name in ((a, "a"), (b, "b")):
                    senders.start_soon(send_ok, http, server, me, cid, f"{name}{i}")

    with anyio.fail_after(WAIT_S):
        watched = await events_while(http, b, me, cid, on_a_and_b_at_once, count=2 * each)
    events: list[dict[str, object]] = [json.loads(data) for _, data in watched]
    # Stored strictly alternating: question, its answer, question, ... with no gaps.
    messages = await stored(http, a, me, cid)
    assert [m["role"] for m in messages] == ["user", "assistant"] * 2 * each
    assert sorted(str(m["content"]) for m in messages[::2]) == sorted(
        f"{n}{i}" for n in "ab" for i in range(each)
    )
    # Published in order: every reply's chunks between its question and its `complete`.
    numbered = [int(str(e["seq"])) for e in events]
    assert numbered == list(range(numbered[0], numbered[0] + len(numbered)))
    running: str | None = None
    for event in events:
        if event["type"] == "chunk":
            running = running or str(event["message_id"])
            assert event["message_id"] == running
        elif event["type"] == "complete":
            assert running is None or dict(event["message"])["id"] == running  # type: ignore[call-overload]
            running = None
        elif event["type"] == "message":
            assert running is None


async def test_cancel_sent_to_b_stops_the_reply_running_on_a(
    http: httpx.AsyncClient, servers: tuple[Server, Server]
) -> None:
    a, b = servers
    me, cid = await new_user_conversation(http, a)
    with anyio.fail_after(WAIT_S):
        async with streaming(http, a, me, cid) as frames:
            reply_id = await first_chunk(frames)
            response = await http.post(f"{b.url}{BASE}/{cid}/cancel", headers=me)
            assert response.json() == {"cancelled": True}
            rest = [json.loads(data) async for data in frames]
    assert rest[-1]["type"] == "cancelled" and rest[-1]["message_id"] == reply_id
    messages = await stored(http, b, me, cid)
    # Stored once, as cancelled, with what it had said.
    assert [(m["role"], m["status"]) for m in messages] == [
        ("user", "complete"),
        ("assistant", "cancelled"),
    ]
    assert messages[1]["id"] == reply_id and messages[1]["content"]


async def test_delete_sent_to_b_stops_the_reply_running_on_a_at_once(
    http: httpx.AsyncClient, servers: tuple[Server, Server], lease_keys: redis.asyncio.Redis
) -> None:
    a, b = servers
    me, cid = await new_user_conversation(http, a)
    with anyio.fail_after(WAIT_S):
        async with streaming(http, a, me, cid) as frames:
            reply_id = await first_chunk(frames)
            response = await http.delete(f"{b.url}{BASE}/{cid}", headers=me)
            assert response.status_code == 204
        # The conversation's events as Redis keeps them: the reply's chunks after the delete
        # and its terminal event, whichever instance ran it.
        after_delete: list[dict[str, object]] = []
        last = "0-0"
        while not after_delete or after_delete[-1].get("type") not in TERMINAL:
            found = await lease_keys.xread({f"parley:c:{cid}:events": last}, block=1000)
            for _, entries in found:
                for entry_id, fields in entries:
                    last = entry_id.decode()
                    data = json.loads(fields[b"e"].split(b"\ndata: ", 1)[1])
                    if data.get("message_id") == reply_id:
                        after_delete.append(data)
    # Without the forwarded discard, A went on generating to the end of its answer (over a
    # hundred 20 ms tokens) and only learned of the delete when it stored the reply.
    ended = after_delete[-1]
    assert (ended["type"], ended["code"]) == ("cancelled", "conversation_deleted")
    chunks = [e for e in after_delete if e["type"] == "chunk"]
    assert len(chunks) < 40


async def test_the_next_message_after_the_owner_was_killed_is_answered_by_a_survivor(
    http: httpx.AsyncClient, servers: tuple[Server, Server], third: Server
) -> None:
    _, b = servers
    me, cid = await new_user_conversation(http, third)
    interrupted: list[str] = []

    async def kill_the_owner_mid_reply_then_send_to_b() -> None:
        async with streaming(http, third, me, cid, "first") as frames:
            interrupted.append(await first_chunk(frames))
            kill(third)
        # Forwarded to the dead owner, nobody listens: B waits out the lease.
        await send_ok(http, b, me, cid, "second")

    with anyio.fail_after(WAIT_S):
        watched = await events_while(http, b, me, cid, kill_the_owner_mid_reply_then_send_to_b)
    events: list[dict[str, object]] = [json.loads(data) for _, data in watched]
    [reply_id] = interrupted
    # Watchers on B were told the interrupted reply ended, then saw the new one.
    ends = [e for e in events if e.get("message_id") == reply_id and e["type"] != "chunk"]
    assert [e["type"] for e in ends] == ["error"]
    assert events[-1]["type"] == "complete"
    messages = await stored(http, b, me, cid)
    assert [(m["role"], m["content"]) for m in messages[:2]] == [
        ("user", "first"),
        ("user", "second"),
    ]
    assert [m["status"] for m in messages] == ["complete"] * 3
    assert messages[2]["role"] == "assistant"


async def test_an_owner_paused_past_its_lease_does_not_store_its_late_reply(
    http: httpx.AsyncClient,
    servers: tuple[Server, Server],
    third: Server,
    lease_keys: redis.asyncio.Redis,
) -> None:
    _, b = servers
    paused = third
    me, cid = await new_user_conversation(http, paused)
    with anyio.fail_after(WAIT_S):
        async with streaming(http, paused, me, cid, "first") as frames:
            stale = await first_chunk(frames)
            paused.process.send_signal(signal.SIGSTOP)
            try:
                # Forwarded to the paused owner, which holds the lease but cannot answer:
                # given up once its lease is gone, long before the 30 s accept deadline.
                started = time.monotonic()
                response = await send(http, b, me, cid, "queued")
                assert response.status_code == 503
                assert time.monotonic() - started < 3 * LEASE_S
                await wait_lease_gone(lease_keys, cid)
                await send_ok(http, b, me, cid, "second")
            finally:
                paused.process.send_signal(signal.SIGCONT)
            # The resumed owner's reply ends without being stored.
            rest = [json.loads(data) async for data in frames]
    assert rest[-1]["message_id"] == stale and rest[-1]["type"] in ("error", "cancelled")
    assert paused.stop() == 0
    messages = await stored(http, b, me, cid)
    assert [(m["role"], m["content"]) for m in messages[:2]] == [
        ("user", "first"),
        ("user", "second"),
    ]
    assert len(messages) == 3 and stale not in {m["id"] for m in messages}
    assert "moved to another instance" in paused.log_text()


async def test_a_lease_is_released_when_its_actor_idles_out_and_on_shutdown(
    http: httpx.AsyncClient, env: dict[str, str], tmp_path: Path, lease_keys: redis.asyncio.Redis
) -> None:
    with (
        running_server(env | {"ACTOR_IDLE_S": "1"}, tmp_path / "idle.log") as idle,
        running_server(env, tmp_path / "stopped.log") as stopped,
    ):
        _, me = await sign_up(http, idle)
        cids = [await new_conversation(http, idle, me) for _ in range(2)]
        assert (await send(http, idle, me, cids[0])).status_code == 201
        assert (await send(http, stopped, me, cids[1])).status_code == 201
        assert await lease_keys.exists(f"parley:l:{cids[0]}", f"parley:l:{cids[1]}") == 2
        # A held lease is renewed for ever: an idle actor's is given up while its holder
        # lives (released; at worst left to expire). On shutdown it is released at once.
        with anyio.fail_after(WAIT_S):
            await wait_lease_gone(lease_keys, cids[0])
        assert idle.process.poll() is None
        assert stopped.stop() == 0
        assert not await lease_keys.exists(f"parley:l:{cids[1]}")
