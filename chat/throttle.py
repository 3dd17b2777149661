"""Rate limits and quotas: sign-in attempts, the users' message budget, concurrent replies.

The counting is the `limits` library's (its asyncio strategies): a moving window for sign-in
attempts (exact, and small), a sliding-window counter for the message budget (two counters
per window, however many messages). The counters live in Redis when `REDIS_URL` is set, so
every instance draws on one budget, and in this process otherwise.

Redis failing never blocks a request: the call is bounded by `REDIS_TIMEOUT_S`, and while
Redis fails (and for `RETRY_S` after each failure) the limits are counted in this process
instead, each failure counted in a metric. Concurrent replies are counted per instance.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import anyio
from limits import RateLimitItem, parse_many
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import (
    MovingWindowRateLimiter,
    RateLimiter,
    SlidingWindowCounterRateLimiter,
)
from redis.asyncio import ConnectionPool

from chat.errors import APIError
from chat.settings import Settings, split_proxies

log = logging.getLogger(__name__)

# After a Redis failure the local counters stand in for this long before Redis is tried again,
# so an outage costs one deadline per `RETRY_S`, not one per request.
RETRY_S = 5.0
KEY_PREFIX = "parley:limits"
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def rate_limited(retry_after_s: float, what: str) -> APIError:
    """429 `rate_limited` with `Retry-After` in whole seconds (at least 1)."""
    seconds = max(1, math.ceil(retry_after_s))
    return APIError(
        429, "rate_limited", f"{what}; try again in {seconds} s", {"Retry-After": str(seconds)}
    )


@dataclass(frozen=True)
class Rules:
    """Which limits apply (from the settings); an empty tuple is a limit turned off."""

    per_address: tuple[RateLimitItem, ...] = ()
    per_email: tuple[RateLimitItem, ...] = ()
    per_user_messages: tuple[RateLimitItem, ...] = ()
    concurrent_replies: int = 0
    # Proxies whose `X-Forwarded-For` is believed (`client_address`).
    trusted_proxies: tuple[Network, ...] = ()

    @classmethod
    def from_settings(cls, settings: Settings) -> Rules:
        def items(text: str) -> tuple[RateLimitItem, ...]:
            return tuple(parse_many(text)) if text else ()

        return cls(
            items(settings.auth_rate_per_address),
            items(settings.auth_rate_per_email),
            items(settings.user_message_rate),
            settings.user_concurrent_replies,
            trusted_networks(split_proxies(settings.trusted_proxies)),
        )


class _Counters:
    """One storage and its two strategies."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self.exact: RateLimiter = MovingWindowRateLimiter(storage)
        self.budget: RateLimiter = SlidingWindowCounterRateLimiter(storage)


class Throttle:
    """Checks a request against the limits before it costs anything; 429 when it is over.

    `on_reject(limit)` and `on_storage_error()` are told of each rejection and each Redis
    failure (the metrics count them); both must return at once.
    """

    def __init__(
        self,
        rules: Rules,
        *,
        redis_url: str = "",
        timeout_s: float = 2.0,
        on_reject: Callable[[str], None] = lambda limit: None,
        on_storage_error: Callable[[], None] = lambda: None,
    ) -> None:
        self.rules = rules
        self._timeout_s = timeout_s
        self._local = _Counters(MemoryStorage())
        self._shared: _Counters | None = None
        self._pool: ConnectionPool | None = None
        if redis_url:
            # redis-py's asyncio client (not coredis) on a pool of our own, which we close;
            # our deadline bounds every call.
            self._pool = ConnectionPool.from_url(
                redis_url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
            )
            redis = RedisStorage(
                "async+" + redis_url,
                implementation="redispy",
                key_prefix=KEY_PREFIX,
                connection_pool=self._pool,  # type: ignore[arg-type]
            )
            self._shared = _Counters(redis)
        self._redis_away_until = 0.0
        self._on_reject = on_reject
        self._on_storage_error = on_storage_error
        self._replies: Counter[uuid.UUID] = Counter()

    async def aclose(self) -> None:
        """Close the Redis connections (the composition root, at shutdown)."""
        if self._pool is not None:
            with anyio.move_on_after(self._timeout_s, shield=True):
                await self._pool.aclose()

    def client(self, peer: str | None, forwarded_for: str | None) -> str:
        """The client's address (`client_address` with the trusted proxies)."""
        return client_address(peer, forwarded_for, self.rules.trusted_proxies)

    async def check_sign_in(self, address: str, email: str) -> None:
        """Count a sign-in or registration attempt from `address` for `email`; 429 when either
        is over its limit. Called before the password is hashed, so a refused attempt costs
        no hashing."""
        wait = await self._hit(self.rules.per_address, "exact", ("address", address))
        if wait is not None:
            raise self._refuse("auth_address", wait, f"sign-in attempts from {address}")
        key = ("email", email.strip().lower())
        wait = await self._hit(self.rules.per_email, "exact", key)
        if wait is not None:
            # The email is not logged: the address is what an operator acts on.
            raise self._refuse("auth_email", wait, f"sign-in attempts for one email from {address}")

    async def check_message(self, user_id: uuid.UUID, conversation_id: uuid.UUID) -> None:
        """Count one message against the user's budget; 429 when it is spent."""
        wait = await self._hit(self.rules.per_user_messages, "budget", ("messages", str(user_id)))
        if wait is not None:
            what = f"messages of user {user_id} (conversation {conversation_id})"
            raise self._refuse("user_messages", wait, what)

    def take_reply_slot(self, user_id: uuid.UUID) -> Callable[[], None] | None:
        """One of the user's concurrent replies (429 when all are taken), and the function that
        gives it back; `None` when the limit is off."""
        limit = self.rules.concurrent_replies
        if not limit:
            return None
        if self._replies[user_id] >= limit:
            raise self._refuse("concurrent_replies", 1.0, f"replies of user {user_id}")
        self._replies[user_id] += 1
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self._replies[user_id] -= 1
                if self._replies[user_id] <= 0:
                    del self._replies[user_id]

        return release

    async def _hit(
        self, items: tuple[RateLimitItem, ...], strategy: str, key: tuple[str, str]
    ) -> float | None:
        """Hit every window of a limit: `None` if all took it, else the seconds until the
        first full one has room again."""
        for item in items:
            limiter = self._limiter(strategy)
            if limiter.storage is self._local.storage:
                # In memory: nothing to wait for, so no deadline (a cancel scope per window
                # was a third of the check's cost).
                if await limiter.hit(item, *key):
                    continue
                stats = await limiter.get_window_stats(item, *key)
                return stats.reset_time - time.time()
            try:
                with anyio.fail_after(self._timeout_s):
                    allowed = await limiter.hit(item, *key)
                    if allowed:
                        continue
                    stats = await limiter.get_window_stats(item, *key)
            except Exception as failure:  # Redis away or slow: count here, never block
                self._redis_failed(failure)
                limiter = self._limiter(strategy)
                if await limiter.hit(item, *key):
                    continue
                stats = await limiter.get_window_stats(item, *key)
            return stats.reset_time - time.time()
        return None

    def _limiter(self, strategy: str) -> RateLimiter:
        counters = self._local
        if self._shared is not None and time.monotonic() >= self._redis_away_until:
            counters = self._shared
        return counters.exact if strategy == "exact" else counters.budget

    def _redis_failed(self, failure: Exception) -> None:
        if self._shared is None:
            raise failure
        if time.monotonic() >= self._redis_away_until:
            log.warning(
                "rate limits: Redis failed (%s); counting in this instance meanwhile",
                type(failure).__name__,
            )
        self._redis_away_until = time.monotonic() + RETRY_S
        self._on_storage_error()

    def _refuse(self, limit: str, wait_s: float, what: str) -> APIError:
        """Count and log one rejection (once: here), and the answer that tells the client."""
        self._on_reject(limit)
        log.warning("rate limited: %s over the %s limit", what, limit)
        return rate_limited(wait_s, "too many requests")


def trusted_networks(proxies: list[str]) -> tuple[Network, ...]:
    """`TRUSTED_PROXIES` as networks (a single address is a network of one)."""
    return tuple(ipaddress.ip_network(p, strict=False) for p in proxies)


def client_address(
    peer: str | None, forwarded_for: str | None, trusted: tuple[Network, ...]
) -> str:
    """The client's address: the peer's, unless the peer is a trusted proxy; then the
    right-most address of `X-Forwarded-For` that is not a trusted proxy (the left part of the
    header is whatever the client wrote, so it is never believed)."""
    address = peer or "unknown"
    if not trusted or not forwarded_for or not _trusted(address, trusted):
        return address
    for hop in reversed([h.strip() for h in forwarded_for.split(",") if h.strip()]):
        if not _trusted(hop, trusted):
            try:
                return str(ipaddress.ip_address(hop))
            except ValueError:
                return address
        address = hop
    return address


def _trusted(address: str, trusted: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in trusted)
