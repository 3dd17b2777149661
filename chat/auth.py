"""The route guard: the bearer token of a request, checked, and its user in `g.user`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import wraps
from typing import ParamSpec, TypeVar

from quart import g, request

from chat.credentials import authenticate, unauthenticated
from chat.services import services
from storage.rows import User

P = ParamSpec("P")
R = TypeVar("R")


def bearer_token(header: str | None) -> str:
    scheme, _, token = (header or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise unauthenticated()
    return token.strip()


def require_user(func: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """Route guard: authenticates the bearer token and puts the user in `g.user`."""

    @wraps(func)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        found = services()
        g.user = await authenticate(
            found.db, found.tokens, found.users, bearer_token(request.headers.get("Authorization"))
        )
        return await func(*args, **kwargs)

    return wrapper


def current_user() -> User:
    user: User = g.user
    return user
