"""Leases against a real (private) redis-server."""

from __future__ import annotations

import uuid

import anyio
import pytest
from redis.asyncio import Redis

from actors.lease import Elsewhere, Held, Leases
from tests.redis_server import RedisServer

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # redis-py's asyncio client


async def test_concurrent_acquisitions_on_one_instance_share_one_fence(
    redis_server: RedisServer,
) -> None:
    claimed: list[int] = []

    async def claim(conversation_id: uuid.UUID, fence: int) -> int | None:
        claimed.append(fence)
        await anyio.sleep(0.05)  # a database round trip, during which others may ask
        return fence

    redis = Redis.from_url(redis_server.url)
    try:
        mine = Leases(redis, "instance-a", lease_s=5, timeout_s=2, claim=claim)
        other = Leases(redis, "instance-b", lease_s=5, timeout_s=2, claim=claim)
        cid = uuid.uuid4()
        results: list[Held | Elsewhere] = []

        async def acquire() -> None:
            results.append(await mine.acquire(cid))

        # Three commands for one conversation arriving at once on one instance (seen in CI:
        # each drew its own fence, and the newest fenced out the actor of the first).
        async with anyio.create_task_group() as tg:
            for _ in range(3):
                tg.start_soon(acquire)
        assert len(claimed) == 1
        assert {r.fence for r in results if isinstance(r, Held)} == {claimed[0]}
        assert len(results) == 3
        elsewhere = await other.acquire(cid)
        assert isinstance(elsewhere, Elsewhere) and elsewhere.owner == "instance-a"
    finally:
        await redis.aclose()
