"""Credentials: passwords (argon2) and access tokens (JWT, HS256 by default).

The JWT code is `joserfc`, the JOSE library by Authlib's authors: `authlib.jose` itself now
warns that it is deprecated in its favour and goes away in Authlib 2.0. Nothing here knows
of requests: the route guard is `chat.auth`.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import anyio.to_thread
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from cachetools import TTLCache
from databases import Database
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import OctKey

from chat.errors import APIError
from chat.settings import Settings
from storage.rows import User
from storage.users import select_user


def _nothing() -> None:
    pass


def unauthenticated(detail: str = "Not authenticated") -> APIError:
    return APIError(401, "not_authenticated", detail)


def inactive() -> APIError:
    return APIError(403, "inactive_user", "This account is inactive")


class Passwords:
    """argon2id hashing, run in worker threads of its own: it is deliberately slow.

    Its own limiter, one thread per CPU: each hash takes `memory_kib` and a CPU, so anyio's
    shared default of 40 threads would let a burst of sign-ins take 40 × 64 MiB and starve
    every other use of worker threads, for no more throughput.
    """

    def __init__(self, *, time_cost: int, memory_kib: int, threads: int | None = None) -> None:
        self._hasher = PasswordHasher(time_cost=time_cost, memory_cost=memory_kib)
        self.limiter = anyio.CapacityLimiter(threads or os.cpu_count() or 1)
        # Verified against when the email is unknown, so both failures take the same time.
        self._dummy = self._hasher.hash("not a real password")
        # Told of every hash computed (the metrics count them: an operator sees what sign-in
        # attempts cost, and that refused ones cost nothing).
        self.on_hash: Callable[[], None] = _nothing

    @classmethod
    def from_settings(cls, settings: Settings) -> Passwords:
        return cls(
            time_cost=settings.password_hash_time_cost,
            memory_kib=settings.password_hash_memory_kib,
        )

    async def hash(self, password: str) -> str:
        self.on_hash()
        return await anyio.to_thread.run_sync(self._hasher.hash, password, limiter=self.limiter)

    async def verify(self, password_hash: str | None, password: str) -> bool:
        self.on_hash()

        def verify() -> bool:
            try:
                return self._hasher.verify(password_hash or self._dummy, password)
            except (VerificationError, InvalidHashError):
                return False

        ok = await anyio.to_thread.run_sync(verify, limiter=self.limiter)
        return ok and password_hash is not None


@dataclass(frozen=True)
class Tokens:
    """Issues and checks access tokens with the one configured algorithm."""

    key: OctKey
    algorithm: str
    issuer: str
    audience: str
    ttl_s: float

    @classmethod
    def from_settings(cls, settings: Settings) -> Tokens:
        return cls(
            key=OctKey.import_key(settings.jwt_secret),
            algorithm=settings.jwt_algorithm,
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            ttl_s=settings.access_token_ttl_s,
        )

    def issue(self, user_id: uuid.UUID) -> str:
        at = int(time.time())
        claims = {
            "sub": str(user_id),
            "iat": at,
            "exp": at + int(self.ttl_s),
            "iss": self.issuer,
            "aud": self.audience,
            "jti": uuid.uuid4().hex,
        }
        return jwt.encode({"alg": self.algorithm, "typ": "JWT"}, claims, self.key)

    @cached_property
    def _claims(self) -> jwt.JWTClaimsRegistry:
        return jwt.JWTClaimsRegistry(
            iss={"essential": True, "value": self.issuer},
            aud={"essential": True, "value": self.audience},
            sub={"essential": True},
            exp={"essential": True},
            iat={"essential": True},
            jti={"essential": True},
        )

    def verify(self, token: str) -> uuid.UUID:
        """The user id of a valid token; `APIError(401)` for anything else."""
        return self.check(token)[0]

    def check(self, token: str) -> tuple[uuid.UUID, float]:
        """The user id and expiry (Unix seconds) of a valid token; `APIError(401)` otherwise."""
        try:
            decoded = jwt.decode(token, self.key, algorithms=[self.algorithm])
            self._claims.validate(decoded.claims)
            return uuid.UUID(str(decoded.claims["sub"])), float(decoded.claims["exp"])
        except (JoseError, ValueError, TypeError) as error:
            raise unauthenticated("Invalid or expired token") from error


# Users looked up by token, kept for `AUTH_CACHE_S`: every authenticated request needs its
# user (to refuse inactive ones), and the same few users are read again and again. A
# deactivation takes effect within that time; `None` (AUTH_CACHE_S=0) turns it off.
UserCache = TTLCache[uuid.UUID, User]
USER_CACHE_SIZE = 10_000


def user_cache(ttl_s: float) -> UserCache | None:
    return TTLCache(maxsize=USER_CACHE_SIZE, ttl=ttl_s) if ttl_s > 0 else None


async def authenticate(db: Database, tokens: Tokens, cache: UserCache | None, token: str) -> User:
    """The active user a token speaks for: 401 for a bad token or user, 403 if inactive."""
    user_id = tokens.verify(token)
    user = None if cache is None else cache.get(user_id)
    if user is None:
        user = await select_user(db, user_id)
        if user is not None and cache is not None:
            cache[user_id] = user
    if user is None:
        raise unauthenticated("Invalid or expired token")
    if not user.is_active:
        raise inactive()
    return user
