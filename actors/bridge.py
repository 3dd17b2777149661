"""The Redis bridge: shares each conversation's events, numbering and history between instances.

Publishing: `Hub.publish` hands the event to `submit` without waiting; one publisher task per
process sends what is queued in one round trip: one script call that, for each conversation in
it, numbers the events, appends them to the conversation's Stream and publishes them to its
channel (and, for what a user's subscribers use, its owner's user channel), all or nothing per
conversation; then it delivers them to this process's subscribers. Numbering is a
compare-and-set on the conversation's hash in Redis, so ids never repeat or skip even when
another instance published meanwhile. The lease (actors/lease.py) makes one publisher per
conversation at a time the rule; the compare-and-set keeps ids right when it is broken.

Receiving: the pub/sub connection (actors/redis_listener.py) is subscribed to exactly the
channels this process's subscribers need, plus the instance's own; events arrive in
`_receive`, which drops this instance's own by their origin before decoding anything.

Redis away: `up` is false, and the hub numbers, retains and delivers locally, in a local epoch;
a conversation numbered locally gets a new epoch in Redis when it returns, so that no client
can resume across the outage as if nothing was missed (it gets `reset`).
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
from anyio.abc import TaskStatus
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from actors import redis_wire as wire
from actors.events import Event, Position
from actors.hub import USER_TYPES, Hub, Replay
from actors.redis_line import Command, Line
from actors.redis_listener import Listener

log = logging.getLogger(__name__)

# Most events sent in one round trip. With one trip in flight, a trip's time bounds the rate:
# under a burst of actor starts a trip took ~50 ms, and 512 events per trip was then just the
# 10,000 events/s of 500 replies, so a backlog never drained. A full trip keeps Redis busy for
# up to ~50 ms (measured ~25 µs of Redis CPU per event), and only while a backlog drains.
BATCH = 2048
# Conversations whose numbering this process remembers (see `_numbers`).
NUMBERS_KEPT = 100_000
# Compare-and-set rounds before a batch is published locally instead (another publisher keeps
# moving the numbering: only possible without the lease).
ROUNDS = 3
FAILURES = (RedisError, OSError, TimeoutError)


@dataclass(frozen=True)
class BridgeConfig:
    timeout_s: float = 2.0
    ping_s: float = 5.0
    reconnect_max_s: float = 10.0
    queue_size: int = 100_000
    retained: int = 1000
    retained_s: float = 600.0


def connect_redis(url: str, timeout_s: float) -> Redis:
    """A client whose every call gives up after `timeout_s`, without retrying by itself."""
    return Redis.from_url(
        url,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=Retry(NoBackoff(), 0),
        health_check_interval=0,
    )


@dataclass(slots=True)
class _Pending:
    conversation_id: uuid.UUID
    user_id: uuid.UUID
    type: str
    payload: dict[str, Any]


@dataclass(slots=True)
class _Call:
    """One script call being built: its header lines and payloads, and what its conversations
    share (one clock reading; one epoch for any whose history Redis lost, since an epoch only
    has to differ from that conversation's previous one)."""

    # What goes before the script call (a lost history's hash deleted).
    commands: list[Command] = field(default_factory=list)
    headers: list[bytes] = field(default_factory=list)
    payloads: list[bytes] = field(default_factory=list)
    fresh: str = field(default_factory=lambda: secrets.token_hex(4))
    now: float = field(default_factory=anyio.current_time)
    at_ms: int = field(default_factory=lambda: int(time.time() * 1000))


class Bridge:
    """Relays a hub's events through Redis; see the module docstring. Run it with `run`."""

    def __init__(
        self, hub: Hub, redis: Redis, config: BridgeConfig, instance: str | None = None
    ) -> None:
        self.hub = hub
        self.redis = redis
        # The publisher's own connection (actors/redis_line.py).
        self._line = Line(redis)
        self.config = config
        self.instance = instance or secrets.token_hex(8)
        # What this instance's own events start with on the wire (actors/redis_wire.py).
        self._origin = wire.origin_prefix(self.instance)
        self.up = False
        self._pending: deque[_Pending] = deque()
        # Passing events (typing) for other instances: (user channel, bytes); never numbered.
        self._signals: list[tuple[bytes, bytes]] = []
        self._in_flight = False
        self._wake = anyio.Event()
        self._idle_waiters: list[anyio.Event] = []
        self._up_waiters: list[anyio.Event] = []
        # Per conversation: the epoch and next seq this process believes Redis holds (the
        # oldest forgotten past NUMBERS_KEPT: a wrong belief costs one compare-and-set round).
        self._numbers: dict[uuid.UUID, tuple[str, int]] = {}
        # Per conversation: b"<conversation> <user>", which every event's header repeats.
        self._ids: dict[uuid.UUID, bytes] = {}
        # Conversations numbered locally while Redis was away: a new epoch when it returns.
        self._diverged: set[uuid.UUID] = set()
        # Per watched conversation, the last event delivered here (to find gaps).
        self._heads: dict[uuid.UUID, Position] = {}
        self._sha = hashlib.sha1(wire.PUBLISH_SCRIPT.encode()).hexdigest()
        # Messages on the instance's own channel (forwarded commands: actors/forwarding.py).
        self.direct: Callable[[bytes], None] | None = None
        self.listener = Listener(
            redis,
            wire.instance_channel(self.instance),
            timeout_s=config.timeout_s,
            ping_s=config.ping_s,
            reconnect_max_s=config.reconnect_max_s,
            on_connect=self._on_connect,
            on_up=self._on_up,
            on_down=self._fail,
            on_event=self._receive,
            on_direct=self._direct,
        )
        hub.relay = self

    @property
    def state(self) -> str:
        return "ok" if self.up else "degraded"

    # The hub's side.

    def submit(
        self, conversation_id: uuid.UUID, user_id: uuid.UUID, type: str, payload: dict[str, Any]
    ) -> bool:
        """Queue an event for the publisher; `False` (publish it locally) while Redis is away."""
        if not self.up and not self._pending and not self._in_flight:
            self._diverged.add(conversation_id)
            return False
        if len(self._pending) >= self.config.queue_size:
            self._fail("the publish queue is full")
            self._publish_queued_locally()
            self._diverged.add(conversation_id)
            return False
        self._pending.append(_Pending(conversation_id, user_id, type, payload))
        self._wake.set()
        return True

    def signal(self, event: Event) -> None:
        """Queue a passing event for the user's channel; dropped while Redis is away (it is
        only ever of the moment) or when the queue is full."""
        if self.up and len(self._signals) < self.config.queue_size:
            self._signals.append(
                (wire.user_channel(event.user_id), wire.encode(event, self.instance))
            )
            self._wake.set()

    def watch(self, topic: uuid.UUID, user: bool, on: bool) -> None:
        """Subscribe to (or leave) a topic's channel, on the supervised connection."""
        channel = wire.user_channel(topic) if user else wire.conversation_channel(topic)
        self.listener.want(channel, on)
        if not on and not user:
            self._heads.pop(topic, None)

    async def replay(self, conversation_id: uuid.UUID, since: Position | None) -> Replay:
        """Wait until the conversation's channel is subscribed, then read what followed `since`
        from its Stream. `None` if Redis cannot say (the hub then replays locally)."""
        channel = wire.conversation_channel(conversation_id)
        try:
            with anyio.fail_after(self.config.timeout_s):
                if self.up:
                    await self.listener.subscribed(channel)
                if not self.up:
                    return None
                if since is None:
                    return []
                if since.seq >= 2**62:
                    return "reset"
                pipe = self.redis.pipeline(transaction=True)
                pipe.hmget(wire.meta_key(conversation_id), ["e", "s"])
                pipe.xrange(wire.stream_key(conversation_id), min=f"{since.seq + 1}-0")
                (epoch, seq), entries = await pipe.execute()
        except FAILURES as error:
            log.warning("replay from Redis failed (%s): replaying locally", type(error).__name__)
            return None
        last = int(seq or 0)
        if epoch is None or since.epoch != epoch.decode() or since.seq > last:
            return "reset"
        oldest_ms = time.time() * 1000 - self.config.retained_s * 1000
        events = [wire.decode(fields[b"e"]) for _, fields in entries]
        kept = [event for at_ms, event in events if at_ms >= oldest_ms]
        if since.seq < last and (not kept or kept[0].seq != since.seq + 1):
            return "reset"
        self._heads.setdefault(conversation_id, Position(epoch.decode(), last))
        return kept

    # Lifecycle.

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Publish and receive until cancelled; started once the first connection was tried."""
        first = anyio.Event()
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._publish_loop)
                tg.start_soon(self.listener.run, first)
                with anyio.move_on_after(2 * self.config.timeout_s):
                    await first.wait()
                task_status.started()
        finally:
            self.up = False
            self.hub.relay = None
            with anyio.CancelScope(shield=True), anyio.move_on_after(self.config.timeout_s):
                await self._line.aclose()

    async def connected(self) -> None:
        """Return once the bridge is connected (the caller bounds the wait)."""
        if not self.up:
            waiter = anyio.Event()
            self._up_waiters.append(waiter)
            await waiter.wait()

    async def flush(self) -> None:
        """Return once everything submitted is published (or published locally)."""
        if self._pending or self._in_flight:
            waiter = anyio.Event()
            self._idle_waiters.append(waiter)
            await waiter.wait()

    # Publishing.

    async def _publish_loop(self) -> None:
        while True:
            if self._signals:
                await self._send_signals()
                continue
            if not self._pending:
                for waiter in self._idle_waiters:
                    waiter.set()
                self._idle_waiters.clear()
                self._wake = anyio.Event()
                await self._wake.wait()
                continue
            if not self.up:
                self._publish_queued_locally()
                continue
            batch = [self._pending.popleft() for _ in range(min(BATCH, len(self._pending)))]
            self._in_flight = True
            try:
                await self._send(batch)
            except FAILURES as error:
                self._fail(f"publish failed: {type(error).__name__}")
                # Unknown whether Redis took them: this instance's clients get them locally.
                self._publish_locally(batch)
                self._publish_queued_locally()
            finally:
                self._in_flight = False

    async def _send_signals(self) -> None:
        signals, self._signals = self._signals, []
        if not self.up:
            return
        try:
            with anyio.fail_after(self.config.timeout_s):
                await self._line.call([("PUBLISH", channel, data) for channel, data in signals])
        except FAILURES as error:
            self._fail(f"publish failed: {type(error).__name__}")

    async def _send(self, batch: list[_Pending]) -> None:
        """Publish `batch` through Redis; what is delivered is removed from it."""
        for _ in range(ROUNDS):
            groups: dict[uuid.UUID, list[_Pending]] = {}
            for item in batch:
                groups.setdefault(item.conversation_id, []).append(item)
            call = _Call()
            sent = [
                (conversation_id, self._add_to(call, conversation_id, items))
                for conversation_id, items in groups.items()
            ]
            call.commands.append(
                (
                    "EVALSHA",
                    self._sha,
                    0,
                    self.config.retained,
                    int(self.config.retained_s * 1000),
                    b"\n".join(call.headers),
                    b"".join(call.payloads),
                )
            )
            with anyio.fail_after(self.config.timeout_s):
                results = await self._line.call(call.commands)
            answers = results[-1]  # after the DELs' answers
            done: set[uuid.UUID] = set()
            for i, (conversation_id, events) in enumerate(sent):
                ok, epoch, seq = answers[3 * i : 3 * i + 3]
                self._believe(conversation_id, epoch.decode(), int(seq) + 1)
                if ok:
                    done.add(conversation_id)
                    self._diverged.discard(conversation_id)
                    for event in events:
                        # This process's subscribers saw everything it published, also in a
                        # local epoch: its own events move the head on without a gap check.
                        self._move_head(event)
                        self.hub.deliver(event)
            batch[:] = [item for item in batch if item.conversation_id not in done]
            if not batch:
                return
        log.warning("numbering kept moving under %d conversations: published locally", len(batch))
        for item in batch:
            self._diverged.add(item.conversation_id)
        self._publish_locally(batch)

    def _add_to(
        self,
        call: _Call,
        conversation_id: uuid.UUID,
        items: list[_Pending],
    ) -> list[Event]:
        """Add one conversation's header line and events to the script call; the events it
        would publish."""
        if conversation_id in self._diverged:
            call.commands.append(("DEL", wire.meta_key(conversation_id)))
            self._numbers.pop(conversation_id, None)
        epoch, first = self._numbers.get(conversation_id, (call.fresh, 1))
        ids = self._ids.get(conversation_id)
        if ids is None:
            ids = b"%s %s" % (str(conversation_id).encode(), str(items[0].user_id).encode())
            self._ids[conversation_id] = ids
        text = ids[:36].decode()
        events = [
            Event.create(
                conversation_id=conversation_id,
                user_id=item.user_id,
                type=item.type,
                epoch=epoch,
                seq=first + i,
                payload=item.payload,
                at=call.now,
                conversation_text=text,
            )
            for i, item in enumerate(items)
        ]
        mask = "".join("1" if event.type in USER_TYPES else "0" for event in events)
        call.headers.append(
            b"%s %s %d %s %d %s"
            % (ids, epoch.encode(), first, call.fresh.encode(), len(events), mask.encode())
        )
        origin, at_ms = self.instance, call.at_ms
        call.payloads += [wire.encode(event, origin, ids, at_ms) + b"\0" for event in events]
        return events

    def _believe(self, conversation_id: uuid.UUID, epoch: str, next_seq: int) -> None:
        if conversation_id not in self._numbers and len(self._numbers) >= NUMBERS_KEPT:
            oldest = next(iter(self._numbers))
            del self._numbers[oldest]
            self._ids.pop(oldest, None)
        self._numbers[conversation_id] = (epoch, next_seq)

    def _publish_locally(self, items: list[_Pending] | deque[_Pending]) -> None:
        for item in items:
            self._diverged.add(item.conversation_id)
            self.hub.publish_local(item.conversation_id, item.user_id, item.type, item.payload)

    def _publish_queued_locally(self) -> None:
        queued, self._pending = self._pending, deque()
        self._publish_locally(queued)

    def _fail(self, reason: str) -> None:
        if self.up:
            log.warning("Redis unavailable (%s): serving this instance's clients alone", reason)
        self.up = False
        self._numbers.clear()
        self._ids.clear()
        self.listener.rebuild()

    # Receiving.

    def _in_sequence(self, event: Event) -> bool:
        """Whether `event` follows the last one delivered here; after a gap (events missed
        while a connection was down) the conversation's subscribers are cut off with `reset`."""
        head = self._heads.get(event.conversation_id)
        if head is not None and head.epoch == event.epoch and event.seq <= head.seq:
            return False  # already delivered (a replay's seam)
        self._move_head(event)
        if head is not None and (head.epoch != event.epoch or event.seq != head.seq + 1):
            self.hub.cut(event.conversation_id, "gap")
        return True

    def _move_head(self, event: Event) -> None:
        if event.conversation_id in self._heads or self.hub.watched(event.conversation_id):
            self._heads[event.conversation_id] = Position(event.epoch, event.seq)

    async def _on_connect(self) -> None:
        # Pooled connections from before a failure may be dead (a restarted Redis): drop them,
        # or the publisher's next call fails on one (no retries, by design).
        await self.redis.connection_pool.disconnect()
        await self._line.close()
        await self.redis.script_load(wire.PUBLISH_SCRIPT)

    def _on_up(self) -> None:
        self.up = True
        for waiter in self._up_waiters:
            waiter.set()
        self._up_waiters.clear()
        log.info("Redis bridge connected as instance %s", self.instance)

    def _direct(self, payload: bytes) -> None:
        if self.direct is not None:
            self.direct(payload)

    def _receive(self, channel: bytes, payload: bytes) -> None:
        if payload.startswith(self._origin):
            return  # delivered here when it was published
        _, event = wire.decode(payload)
        if wire.is_conversation_channel(channel):
            if self._in_sequence(event):
                self.hub.deliver(event, user=False)
        else:
            self.hub.deliver(event, conversation=False)
