"""The WebSocket handshake: the token is checked before the socket is accepted."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import AsyncExitStack
from pathlib import Path

import anyio
import httpx
import pytest
from websockets.exceptions import InvalidStatus

from tests.server import Server, parley
from tests.tokens import claims, unsigned
from tests.ws.conftest import (
    SECRET,
    eventually,
    forged,
    open_socket,
    serving,
    sign_up,
    ws_env,
)

pytestmark = pytest.mark.anyio
CAP = 3


@pytest.fixture(scope="module", name="tmp")
def fixture_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ws-handshake")


@pytest.fixture(scope="module", name="env")
def fixture_env(tmp: Path) -> dict[str, str]:
    # No user cache: a deactivation counts at the very next handshake.
    return ws_env(tmp, auth_cache_s="0", ws_max_sockets_per_user=str(CAP))


@pytest.fixture(scope="module", name="server")
def fixture_server(env: dict[str, str], tmp: Path) -> Iterator[Server]:
    with serving(env, tmp) as server:
        yield server


async def expect_refused(server: Server, token: str | None, *, header: bool = False) -> None:
    """The handshake is answered 403 and the socket never opens."""
    with pytest.raises(InvalidStatus) as refused:
        async with open_socket(server, token, header=header):
            pytest.fail("a socket with a bad token was accepted")
    assert refused.value.response.status_code == 403


async def test_a_missing_token_is_refused(server: Server) -> None:
    await expect_refused(server, None)


@pytest.mark.parametrize("where", ["query", "header"])
async def test_each_bad_token_is_refused(
    server: Server, http: httpx.AsyncClient, where: str
) -> None:
    user = await sign_up(http)
    at = int(time.time())
    bad = {
        "malformed": "not.a.token",
        "garbage": "x" * 40,
        "expired": forged(user.id, iat=at - 100, exp=at - 10),
        "wrong key": forged(user.id, secret="another-secret-" + "y" * 40),
        "alg none": unsigned("none", {"sub": user.id, "exp": at + 600}),
        "alg none with every claim": unsigned("none", claims(user.id)),
        "unknown user": forged(str(uuid.uuid4())),
        "wrong audience": forged(user.id, aud="other-api"),
    }
    for name, token in bad.items():
        try:
            await expect_refused(server, token, header=where == "header")
        except BaseException as error:
            error.add_note(f"token: {name}")
            raise


async def test_an_inactive_user_is_refused(
    server: Server, http: httpx.AsyncClient, env: dict[str, str]
) -> None:
    user = await sign_up(http)
    async with open_socket(server, user.token) as socket:
        await socket.ping()
    await anyio.to_thread.run_sync(lambda: parley("user", "deactivate", user.email, env=env))
    await expect_refused(server, user.token)
    await expect_refused(server, user.token, header=True)


async def test_a_good_token_in_the_query_string_is_accepted(
    server: Server, http: httpx.AsyncClient
) -> None:
    user = await sign_up(http)
    async with open_socket(server, user.token) as socket:
        await socket.ping()


async def test_a_good_token_in_the_authorization_header_is_accepted(
    server: Server, http: httpx.AsyncClient
) -> None:
    user = await sign_up(http)
    async with open_socket(server, user.token, header=True) as socket:
        await socket.ping()


async def test_a_token_in_the_query_string_never_reaches_the_log(
    server: Server, http: httpx.AsyncClient
) -> None:
    user = await sign_up(http)
    before = server.log_text().count("/ws/chat")
    async with open_socket(server, user.token) as socket:
        await socket.ping()
    refused = forged(user.id, secret="another-secret-" + "y" * 40)
    await expect_refused(server, refused)

    # Both handshakes are in the access log (so the log is being written), neither token is.
    async def logged() -> bool:
        return server.log_text().count("/ws/chat") >= before + 2

    await eventually(logged)
    log = server.log_text()
    assert user.token not in log
    assert refused not in log
    assert SECRET not in log


async def test_sockets_over_the_per_user_cap_are_refused(
    server: Server, http: httpx.AsyncClient
) -> None:
    user = await sign_up(http)
    other = await sign_up(http)
    async with AsyncExitStack() as stack:
        sockets = [
            await stack.enter_async_context(open_socket(server, user.token)) for _ in range(CAP)
        ]
        await expect_refused(server, user.token)
        # The cap is per user: another user still gets in, and the open ones still work.
        async with open_socket(server, other.token) as socket:
            await socket.ping()
        for socket in sockets:
            await socket.ping()
        await sockets[0].conn.close()
    # Closed sockets free their places (the server notices a close a moment after the client).

    async def all_places_free() -> bool:
        try:
            async with AsyncExitStack() as stack:
                for _ in range(CAP):
                    socket = await stack.enter_async_context(open_socket(server, user.token))
                    await socket.ping()
        except InvalidStatus:
            return False
        return True

    await eventually(all_places_free)
