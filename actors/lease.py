"""One live actor per conversation across the cluster: a lease in Redis, and its fencing number.

Per conversation: `parley:l:<id>` holds `<instance> <fence>` and expires after `ACTOR_LEASE_S`
unless renewed; `parley:l:<id>:n` is the counter the fence is drawn from (INCR on every
acquisition, so it only grows); `parley:l:<id>:reply` names the reply being generated under
the lease, so that whoever takes the conversation over after its owner died can end that
reply for its watchers (a terminal `error` event).

The registry acquires before it spawns an actor and releases once the conversation's last
actor here ended; one task per process renews every lease this process holds, in one script
call. The fence is also written to `conversations.fence` when an actor starts (`claim`), and
every message insert checks it, so a holder that lost its lease (paused past its expiry)
cannot write after the next holder started. The counter may expire or Redis may lose it: a
claim that finds the database ahead pushes the counter past it and draws again.

Redis away: the actor runs here without a lease (`UNFENCED`), as every instance does on its
own clients during an outage (docs/design.md).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import anyio
from redis.asyncio import Redis
from redis.exceptions import RedisError

from actors.redis_wire import PREFIX

log = logging.getLogger(__name__)

FAILURES = (RedisError, OSError, TimeoutError)
# The fence of an actor started while Redis was away: passes every check, raises nothing.
UNFENCED = 2**62
# The counter outlives every lease by far; when it is gone the database's fence takes over.
COUNTER_TTL_MS = 7 * 24 * 3600 * 1000
CLAIM_ROUNDS = 3
# A reply's record outlives any reply (REPLY_TIMEOUT_S) and its lease; a record left behind
# (its actor crashed, the reply already ended) is forgotten after this.
REPLY_RECORD_TTL_MS = 3600 * 1000

# KEYS: lease, counter, reply. ARGV: instance, lease ms, counter ttl ms.
# Free (or already ours): draw the next fence and hold the lease under it. Taking over a free
# lease also takes the reply a previous holder left unfinished.
ACQUIRE = """
local current = redis.call('GET', KEYS[1])
if current then
  local owner = string.match(current, '^(%S+)')
  if owner ~= ARGV[1] then
    return {0, current, redis.call('PTTL', KEYS[1])}
  end
end
local fence = redis.call('INCR', KEYS[2])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. fence, 'PX', ARGV[2])
local reply = ''
if not current then
  reply = redis.call('GET', KEYS[3]) or ''
  redis.call('DEL', KEYS[3])
end
return {1, fence, reply}
"""
# KEYS: leases. ARGV: lease ms, then each lease's expected value. 1 renewed, 0 gone, -1 taken.
RENEW = """
local result = {}
for i, key in ipairs(KEYS) do
  local current = redis.call('GET', key)
  if current == ARGV[i + 1] then
    redis.call('PEXPIRE', key, ARGV[1])
    result[i] = 1
  elseif current then
    result[i] = -1
  else
    result[i] = 0
  end
end
return result
"""
# KEYS: key. ARGV: expected value. Delete only what is still ours.
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""
# KEYS: counter. ARGV: a number the counter must reach.
RAISE = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if current < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
end
return 1
"""


def lease_key(conversation_id: uuid.UUID) -> str:
    return f"{PREFIX}l:{conversation_id}"


@dataclass(frozen=True)
class Held:
    """This process holds the lease under `fence`; `interrupted` is the id of a reply the
    previous holder left unfinished (it died), if any."""

    fence: int
    interrupted: str | None = None


@dataclass(frozen=True)
class Elsewhere:
    """Another instance holds the lease for about `ttl_s` more unless it renews it."""

    owner: str
    ttl_s: float


Claim = Callable[[uuid.UUID, int], Awaitable[int | None]]
Lost = Callable[[uuid.UUID, bool], None]


class Leases:
    """The leases this process holds; `run` renews them. See the module docstring."""

    def __init__(
        self, redis: Redis, instance: str, *, lease_s: float, timeout_s: float, claim: Claim
    ) -> None:
        self.redis = redis
        self.instance = instance
        self.lease_s = lease_s
        self.timeout_s = timeout_s
        self._claim = claim
        # Per conversation held here: the lease's value in Redis.
        self.held: dict[uuid.UUID, str] = {}
        # Told when a lease was found gone (False) or taken by another instance (True).
        self.on_lost: Lost = lambda conversation_id, taken: None
        # Whether Redis is reachable as far as the bridge knows: away, no call waits on it.
        self.available: Callable[[], bool] = lambda: True
        self._releases: list[tuple[uuid.UUID, str]] = []
        # Acquisitions under way: a second caller for the same conversation waits on the first
        # instead of drawing a fence of its own (which would fence the first one's actor out).
        self._acquiring: dict[uuid.UUID, anyio.Event] = {}
        self._wake = anyio.Event()

    @property
    def _ms(self) -> int:
        return int(self.lease_s * 1000)

    def fence(self, conversation_id: uuid.UUID) -> int | None:
        value = self.held.get(conversation_id)
        return None if value is None else int(value.rsplit(" ", 1)[1])

    async def acquire(self, conversation_id: uuid.UUID) -> Held | Elsewhere:
        """Hold the conversation's lease (or learn who does), and claim its fence in the
        database. Redis away: `Held(UNFENCED)`. Concurrent callers for one conversation share
        one acquisition."""
        while (under_way := self._acquiring.get(conversation_id)) is not None:
            await under_way.wait()
        fence = self.fence(conversation_id)
        if fence is not None:
            return Held(fence)
        done = self._acquiring[conversation_id] = anyio.Event()
        try:
            return await self._acquire(conversation_id)
        finally:
            del self._acquiring[conversation_id]
            done.set()

    async def _acquire(self, conversation_id: uuid.UUID) -> Held | Elsewhere:
        if not self.available():
            return Held(UNFENCED)
        key = lease_key(conversation_id)
        keys = (key, f"{key}:n", f"{key}:reply")
        for _ in range(CLAIM_ROUNDS):
            try:
                with anyio.fail_after(self.timeout_s):
                    taken, value, extra = await self.redis.eval(
                        ACQUIRE, 3, *keys, self.instance, self._ms, COUNTER_TTL_MS
                    )
            except FAILURES as error:
                log.warning("lease of %s not taken (%s): unfenced", conversation_id, error)
                return Held(UNFENCED)
            if not taken:
                return Elsewhere(value.decode().split(" ")[0], max(int(extra), 0) / 1000)
            fence = int(value)
            self.held[conversation_id] = f"{self.instance} {fence}"
            interrupted = extra.decode() or None
            try:
                stored = await self._claim(conversation_id, fence)
            except BaseException:
                self._drop(conversation_id)
                raise
            if stored is None or stored <= fence:
                return Held(fence, interrupted and interrupted.split(" ")[-1])
            # The database is ahead of the counter (Redis lost or expired it): move it on.
            log.info("fence of %s behind the database (%d < %d)", conversation_id, fence, stored)
            self._drop(conversation_id)
            try:
                with anyio.fail_after(self.timeout_s):
                    await self.redis.eval(RAISE, 1, keys[1], stored, COUNTER_TTL_MS)
            except FAILURES:
                break
        return Held(UNFENCED)

    def release_soon(self, conversation_id: uuid.UUID) -> None:
        """Give the lease up (the renewal task deletes it, if it is still ours)."""
        self._drop(conversation_id)

    def _drop(self, conversation_id: uuid.UUID) -> None:
        value = self.held.pop(conversation_id, None)
        if value is not None:
            self._releases.append((conversation_id, value))
            self._wake.set()

    async def owner(self, conversation_id: uuid.UUID) -> str | None:
        """The instance holding the conversation's lease, `None` if nobody (or Redis away)."""
        try:
            return await self.holder(conversation_id)
        except FAILURES:
            return None

    async def holder(self, conversation_id: uuid.UUID) -> str | None:
        """The instance holding the conversation's lease, `None` if nobody; raises when
        Redis cannot say."""
        with anyio.fail_after(self.timeout_s):
            value = await self.redis.get(lease_key(conversation_id))
        if value is None:
            return None
        return (value.decode() if isinstance(value, bytes) else value).split(" ")[0]

    async def mark_reply(self, conversation_id: uuid.UUID, reply_id: uuid.UUID | None) -> None:
        """Record (or with `None` clear) the reply being generated under our lease."""
        value = self.held.get(conversation_id)
        if value is None or not self.available():
            return
        key = f"{lease_key(conversation_id)}:reply"
        try:
            with anyio.fail_after(self.timeout_s):
                if reply_id is None:
                    await self.redis.delete(key)
                else:
                    # Outlives the lease: a survivor takes it when it takes the lease over.
                    await self.redis.set(key, f"{value} {reply_id}", px=REPLY_RECORD_TTL_MS)
        except FAILURES as error:
            log.warning("reply of %s not recorded in Redis (%s)", conversation_id, error)

    async def run(self) -> None:
        """Renew every lease held here each third of the lease; release what is given up.
        On exit (shutdown), release them all."""
        try:
            while True:
                with anyio.move_on_after(self.lease_s / 3):
                    await self._wake.wait()
                self._wake = anyio.Event()
                await self._release_given_up()
                await self._renew()
        finally:
            with anyio.move_on_after(self.timeout_s, shield=True):
                for conversation_id in list(self.held):
                    self._drop(conversation_id)
                await self._release_given_up()

    async def _release_given_up(self) -> None:
        releases, self._releases = self._releases, []
        if not releases:
            return
        try:
            with anyio.fail_after(self.timeout_s):
                pipe = self.redis.pipeline(transaction=False)
                for conversation_id, value in releases:
                    pipe.eval(RELEASE, 1, lease_key(conversation_id), value)
                await pipe.execute()
        except FAILURES as error:
            # They expire by themselves within the lease.
            log.warning("releasing %d leases failed (%s)", len(releases), error)

    async def _renew(self) -> None:
        held = list(self.held.items())
        if not held:
            return
        try:
            with anyio.fail_after(self.timeout_s):
                results = await self.redis.eval(
                    RENEW,
                    len(held),
                    *[lease_key(c) for c, _ in held],
                    self._ms,
                    *[value for _, value in held],
                )
        except FAILURES as error:
            # The writes are fenced; the actors go on serving this instance's clients.
            log.warning("renewing %d leases failed (%s)", len(held), error)
            return
        for (conversation_id, value), result in zip(held, results, strict=True):
            if result != 1 and self.held.get(conversation_id) == value:
                del self.held[conversation_id]
                log.warning("lease of conversation %s lost", conversation_id)
                self.on_lost(conversation_id, result == -1)
