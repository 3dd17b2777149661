"""The bridge's pub/sub connection: one per process, subscribed to exactly the channels wanted.

One supervised task holds the connection. It subscribes to what is wanted (and follows the
wants as they change), reads until the connection fails, and then rebuilds it with backoff:
redis-py's asyncio PubSub neither reconnects nor notices a half-open socket by itself
(PITFALLS: redis-py #2089, #2417), so a quiet connection is PINGed and one that does not answer
is treated as lost. What it reads goes to the bridge's callbacks.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import anyio
from redis.asyncio import Redis
from redis.asyncio.client import PubSub

try:  # what redis-py's hiredis reader answers while a reply is incomplete
    from redis._parsers.hiredis import NOT_ENOUGH_DATA
except ImportError:  # pragma: no cover - a redis-py without it: nothing is drained
    NOT_ENOUGH_DATA = None

log = logging.getLogger(__name__)

FIRST_BACKOFF_S = 0.05


class Broken(Exception):
    """The connection must be rebuilt."""


class Listener:
    """Holds the pub/sub connection; run it with `run`."""

    def __init__(
        self,
        redis: Redis,
        own_channel: bytes,
        *,
        timeout_s: float,
        ping_s: float,
        reconnect_max_s: float,
        on_connect: Callable[[], Awaitable[None]],
        on_up: Callable[[], None],
        on_down: Callable[[str], None],
        on_event: Callable[[bytes, bytes], None],
        on_direct: Callable[[bytes], None],
    ) -> None:
        self.redis = redis
        self.own_channel = own_channel
        self.timeout_s = timeout_s
        self.ping_s = ping_s
        self.reconnect_max_s = reconnect_max_s
        self.on_connect = on_connect
        self.on_up = on_up
        self.on_down = on_down
        self.on_event = on_event
        self.on_direct = on_direct
        self.connected = False
        self._wanted: set[bytes] = {own_channel}
        self._sent: set[bytes] = set()
        self._confirmed: set[bytes] = set()
        self._confirm_waiters: dict[bytes, anyio.Event] = {}
        self._changed = anyio.Event()
        self._broken = anyio.Event()

    def want(self, channel: bytes, on: bool) -> None:
        """Be subscribed to `channel` (or not), as soon as the connection allows."""
        if on:
            self._wanted.add(channel)
        else:
            self._wanted.discard(channel)
        self._changed.set()

    async def subscribed(self, channel: bytes) -> None:
        """Return once Redis confirmed the subscription to `channel` (the caller bounds the
        wait), or at once while disconnected."""
        if self.connected and channel not in self._confirmed:
            await self._confirm_waiters.setdefault(channel, anyio.Event()).wait()

    def rebuild(self) -> None:
        """Someone else found Redis gone (the publisher): rebuild the connection."""
        self._broken.set()

    async def run(self, first: anyio.Event) -> None:
        """Keep a connection until cancelled; `first` is set once the first one was tried."""
        backoff = FIRST_BACKOFF_S
        while True:
            try:
                await self._session(first)
            except Exception as error:  # any failure of the connection: rebuild it
                while isinstance(error, ExceptionGroup):
                    error = error.exceptions[0]
                reason = f"{type(error).__name__}: {error}"
                if self.connected:
                    log.warning("Redis connection lost (%s): reconnecting", reason)
                elif not first.is_set():
                    # Said once at start, so an operator sees why /readyz says "degraded".
                    log.warning(
                        "Redis unavailable at start (%s): serving this instance's clients "
                        "alone, retrying every %g s at most",
                        reason,
                        self.reconnect_max_s,
                    )
                else:
                    log.debug("Redis still unavailable (%s)", reason)
            if self.connected:
                backoff = FIRST_BACKOFF_S
            self.connected = False
            self.on_down("connection lost")
            first.set()
            await anyio.sleep(backoff)
            backoff = min(backoff * 2, self.reconnect_max_s)

    async def _session(self, first: anyio.Event) -> None:
        """One connection's life: subscribe to what is wanted, then read until it fails."""
        self._broken = anyio.Event()
        self._sent.clear()
        self._confirmed.clear()
        pubsub = self.redis.pubsub()
        try:
            with anyio.fail_after(self.timeout_s):
                await self.on_connect()
                self._sent = set(self._wanted)
                await pubsub.subscribe(*self._sent)
                while not self._sent <= self._confirmed:
                    message = await pubsub.get_message(timeout=self.timeout_s)
                    if message is not None:
                        self._handle(message)
            self.connected = True
            self.on_up()
            first.set()
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._sync_channels, pubsub)
                tg.start_soon(self._watch_broken)
                await self._read(pubsub)
        finally:
            with anyio.move_on_after(self.timeout_s, shield=True):
                await pubsub.aclose()  # type: ignore[no-untyped-call]

    def _handle(self, message: dict[str, Any]) -> None:
        kind, channel = message["type"], message["channel"]
        if kind == "message":
            if channel == self.own_channel:
                self.on_direct(message["data"])
            else:
                self.on_event(channel, message["data"])
        elif kind == "subscribe":
            self._confirmed.add(channel)
            waiter = self._confirm_waiters.pop(channel, None)
            if waiter is not None:
                waiter.set()
        elif kind == "unsubscribe":
            self._confirmed.discard(channel)

    async def _watch_broken(self) -> None:
        await self._broken.wait()
        raise Broken("the publisher lost Redis")

    async def _read(self, pubsub: PubSub) -> None:
        connection = pubsub.connection
        if connection is None:
            raise Broken("the pub/sub connection is not open")
        # The connection's parser is the same for its whole life: looked up once.
        buffered = _buffered_replies(connection)
        pinged = False
        while True:
            quiet = self.timeout_s if pinged else self.ping_s
            # The connection's own read, bounded by `quiet` (it answers `None` then): what
            # `parse_response` adds (a retry wrapper, a health check, timing for redis-py's
            # observability) was a third of the cost of a message arriving alone.
            response = await connection.read_response(
                timeout=quiet, disconnect_on_error=False, push_request=True
            )
            if response is not None:
                pinged = False
                await self._take(pubsub, response)
                # What arrived with it is taken without another trip through redis-py's
                # read path (a task switch, a timeout scope and a retry wrapper per message).
                for response in buffered():
                    await self._take(pubsub, response)
                continue
            if pinged:
                raise Broken("no answer to PING")
            # Quiet: a half-open socket would never say so, so ask.
            with anyio.fail_after(self.timeout_s):
                await pubsub.ping()
            pinged = True

    async def _take(self, pubsub: PubSub, response: Any) -> None:
        # Events are most of what arrives: taken as the parser gives them, without redis-py's
        # per-message dict (measured: about 25 µs of 40 per message).
        if response[0] == b"message" and response[1] != self.own_channel:
            self.on_event(response[1], response[2])
            return
        message = await pubsub.handle_message(response)  # type: ignore[no-untyped-call]
        if message is not None:
            self._handle(message)

    async def _sync_channels(self, pubsub: PubSub) -> None:
        while True:
            changed = self._changed = anyio.Event()
            add, drop = self._wanted - self._sent, self._sent - self._wanted
            with anyio.fail_after(self.timeout_s):
                if add:
                    self._sent |= add
                    await pubsub.subscribe(*add)
                if drop:
                    self._sent -= drop
                    self._confirmed -= drop
                    await pubsub.unsubscribe(*drop)
            await changed.wait()


def _buffered_replies(connection: Any) -> Callable[[], Iterator[Any]]:
    """What yields the replies already complete in `connection`'s hiredis reader (nothing
    without hiredis, or if redis-py's parser changes shape: then each reply goes through the
    connection's read). Errors are raised as redis-py's own read would."""
    reader = getattr(getattr(connection, "_parser", None), "_reader", None)
    gets = getattr(reader, "gets", None)

    def replies() -> Iterator[Any]:
        if gets is None or NOT_ENOUGH_DATA is None:
            return
        while (response := gets()) is not NOT_ENOUGH_DATA:
            if isinstance(response, Exception):
                raise response
            if not isinstance(response, list) or not response:
                raise Broken(f"unexpected pub/sub reply {response!r:.80}")
            if isinstance(response[0], Exception):
                raise response[0]
            yield response

    return replies
