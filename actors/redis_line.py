"""The publisher's own connection to Redis: commands written and their answers read directly.

redis-py's pipeline costs more per call than the rest of a small round trip: with a socket
timeout each write runs in a task of its own (`asyncio.wait_for`), and each `execute` resets
the pipeline in a shielded task. Measured with one event per round trip (what 100 replies at
20 tokens/s look like): see docs/benchmarks.md "Cluster". The connection is redis-py's (so
URLs, authentication and TLS are as for every other client); it has no socket timeout of its
own because every call here is bounded by the caller's deadline, and a call that fails or is
cancelled half-way leaves the connection out of step, so it is closed and the next call opens
a new one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import anyio
from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection, ConnectionPool

Command = Sequence[Any]


class Line:
    """One connection, used by one task at a time (the bridge's publisher)."""

    def __init__(self, redis: Redis) -> None:
        pool = redis.connection_pool
        kwargs = {**pool.connection_kwargs, "socket_timeout": None}
        self._pool = ConnectionPool(
            connection_class=pool.connection_class, max_connections=1, **kwargs
        )
        self._connection: AbstractConnection | None = None

    async def call(self, commands: Sequence[Command]) -> list[Any]:
        """Send `commands` in one write and return their answers; an error answer raises
        (redis-py's `ResponseError`), as does a lost connection."""
        connection = self._connection
        if connection is None:
            connection = self._connection = await self._pool.get_connection()  # type: ignore[no-untyped-call]
        try:
            packed = connection.pack_commands(commands)
            await connection.send_packed_command(packed, check_health=False)
            return [await connection.read_response() for _ in commands]
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        """Drop the connection (the next call opens another)."""
        connection, self._connection = self._connection, None
        if connection is not None:
            with anyio.CancelScope(shield=True):
                await connection.disconnect(nowait=True)
                await self._pool.release(connection)

    async def aclose(self) -> None:
        await self.close()
        await self._pool.disconnect()
