"""The Redis bridge between two hubs (two instances) on a private redis-server, on asyncio."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest

from actors.bridge import Bridge, BridgeConfig, connect_redis
from actors.events import Event, Position
from actors.hub import Hub, Subscription
from tests.redis_server import RedisServer, running_redis
from tests.server import free_port

pytestmark = pytest.mark.anyio
USER = uuid.uuid4()
CONFIG = BridgeConfig(timeout_s=0.5, ping_s=0.5, reconnect_max_s=0.2)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # redis-py runs on asyncio


@pytest.fixture(name="redis_server", scope="module")
def fixture_redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with running_redis(tmp_path_factory.mktemp("redis")) as server:
        yield server


@asynccontextmanager
async def instance(url: str) -> AsyncIterator[tuple[Hub, Bridge]]:
    """A hub with its bridge running, as the composition root builds them."""
    hub = Hub()
    client = connect_redis(url, CONFIG.timeout_s)
    bridge = Bridge(hub, client, CONFIG)
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(bridge.run)
            yield hub, bridge
            with anyio.fail_after(5):
                await bridge.flush()
            hub.close()
            tg.cancel_scope.cancel()
    finally:
        await client.aclose()


def publish(hub: Hub, cid: uuid.UUID, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        hub.publish(cid, USER, "chunk", {"message_id": "m", "content": f"t{i}"})


async def receive(subscription: Subscription, n: int) -> list[Event]:
    events = []
    with anyio.fail_after(5):
        while len(events) < n:
            event = await subscription.receive()
            assert event is not None
            if event.type != "keep-alive":
                events.append(event)
    return events


async def follow(hub: Hub, cid: uuid.UUID, since: Position | None = None) -> Subscription:
    subscription = Subscription(hub, cid, 1000)
    await hub.follow(subscription, since)
    return subscription


async def test_events_cross_instances_as_the_same_bytes_once_each(
    redis_server: RedisServer,
) -> None:
    async with instance(redis_server.url) as (a, _), instance(redis_server.url) as (b, _):
        cid = uuid.uuid4()
        with (
            await follow(a, cid) as on_a,
            await follow(b, cid) as on_b,
            b.subscribe_user(USER) as user_on_b,
        ):
            publish(a, cid, 49)
            a.publish(cid, USER, "conversation_updated", {"conversation": {"id": str(cid)}})
            got_a, got_b = await receive(on_a, 50), await receive(on_b, 50)
            assert [e.sse for e in got_a] == [e.sse for e in got_b]
            # A user's subscribers get the list's changes, not the replies' own events.
            (got_user,) = await receive(user_on_b, 1)
            assert got_user.sse == got_b[-1].sse and got_user.type == "conversation_updated"
            assert user_on_b.queued(10) == []
            assert [e.seq for e in got_b] == list(range(1, 51))
            assert [e.data for e in got_a] == [e.data for e in got_b]
            # Nothing more: A did not deliver its own events a second time from Redis.
            publish(a, cid, 1, 50)
            (last,) = await receive(on_a, 1)
            assert last.seq == 51 and on_a.queued(10) == []


async def test_numbering_continues_across_instances_without_gaps(redis_server: RedisServer) -> None:
    async with instance(redis_server.url) as (a, _), instance(redis_server.url) as (b, _):
        cid = uuid.uuid4()
        with await follow(a, cid) as watcher:
            publish(a, cid, 3)
            await receive(watcher, 3)
            publish(b, cid, 3, 3)  # the conversation moved to B
            await receive(watcher, 3)
            publish(a, cid, 3, 6)  # and back (A's view of the numbering is stale)
            events = await receive(watcher, 3)
        assert events[-1].seq == 9
    async with instance(redis_server.url) as (c, _):  # a restarted instance
        with await follow(c, cid) as watcher:
            publish(c, cid, 1)
            (event,) = await receive(watcher, 1)
            assert (event.epoch, event.seq) == (events[0].epoch, 10)


async def test_replay_on_another_instance_has_no_gap_and_no_duplicate(
    redis_server: RedisServer,
) -> None:
    async with instance(redis_server.url) as (a, _):
        cid = uuid.uuid4()
        with await follow(a, cid) as watcher:
            publish(a, cid, 10)
            produced = await receive(watcher, 10)
    # A is gone; B resumes from the 4th event out of Redis, then goes live.
    async with instance(redis_server.url) as (b, _):
        since = Position(produced[0].epoch, 4)
        with await follow(b, cid, since) as resumed:
            publish(b, cid, 2, 10)
            events = await receive(resumed, 8)
            assert [e.seq for e in events] == list(range(5, 13))
            assert [e.sse for e in events[:6]] == [e.sse for e in produced[4:]]
        with await follow(b, cid, Position("otherepoch", 4)) as stranger:
            assert stranger.reset_first == "unknown_position"
        with await follow(b, cid, Position(produced[0].epoch, 99)) as ahead:
            assert ahead.reset_first == "unknown_position"


async def test_redis_down_serves_locally_then_reconnects(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    with running_redis(tmp_path) as own:
        async with instance(own.url) as (a, bridge_a), instance(own.url) as (b, bridge_b):
            cid = uuid.uuid4()
            with await follow(a, cid) as local, await follow(b, cid) as remote:
                publish(a, cid, 2)
                before = await receive(local, 2)
                await receive(remote, 2)
                own.stop()
                publish(a, cid, 3, 2)
                # A's own subscriber goes on getting events, numbered in a local epoch.
                during = await receive(local, 3)
                assert bridge_a.state == "degraded"
                assert {e.epoch for e in during} != {before[0].epoch}
                with await follow(a, cid, Position(before[0].epoch, 2)) as resumed:
                    assert resumed.reset_first == "unknown_position"
                own.start()
                with anyio.fail_after(5):
                    await bridge_a.connected()
                    await bridge_b.connected()
                publish(a, cid, 1, 5)
                (after,) = await receive(local, 1)
                # B missed what A numbered locally: its stream is cut with `reset`.
                assert await receive_end(remote) == "gap"
            with await follow(b, cid) as again:
                publish(a, cid, 1, 6)
                (event,) = await receive(again, 1)
                assert (event.epoch, event.seq) == (after.epoch, after.seq + 1)


async def receive_end(subscription: Subscription) -> str | None:
    with anyio.fail_after(5):
        while await subscription.receive() is not None:
            pass
    return subscription.cut_off


async def test_redis_unreachable_at_start_is_said_once_and_events_stay_local(
    caplog: pytest.LogCaptureFixture,
) -> None:
    closed = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    with caplog.at_level(logging.DEBUG, logger="actors.redis_listener"):
        async with instance(closed) as (hub, bridge):
            assert bridge.state == "degraded"
            with hub.subscribe(uuid.uuid4()) as subscription:
                publish(hub, subscription.topic, 2)
                assert [e.seq for e in await receive(subscription, 2)] == [1, 2]
    # The first attempt is over once the bridge has started (its `first` is set after it).
    said = [r for r in caplog.records if "unavailable at start" in r.message]
    assert len(said) == 1 and said[0].levelno == logging.WARNING
