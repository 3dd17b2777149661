"""A token that expires while its socket is open: `token_expired`, then close 1008, unless the
client sent `auth` with a fresh token in time."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from tests.server import Server
from tests.ws.conftest import Socket, fresh_token, open_socket, serving, sign_up, ws_env

pytestmark = pytest.mark.anyio
TTL_S = 3


@pytest.fixture(scope="module", name="server")
def fixture_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("ws-expiry")
    with serving(ws_env(tmp, access_token_ttl_s=str(TTL_S)), tmp) as server:
        yield server


async def expect_expired(socket: Socket) -> None:
    """An `error` `token_expired`, then the server closes with 1008."""
    error = await socket.until(lambda f: f["type"] == "error")
    assert error[-1]["code"] == "token_expired", error
    with pytest.raises(ConnectionClosed) as closed:
        await socket.receive()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008


async def test_a_token_expiring_while_open_gets_token_expired_then_1008(
    server: Server, http: httpx.AsyncClient
) -> None:
    user = await sign_up(http)
    async with open_socket(server, user.token) as socket:
        await socket.ping()
        await expect_expired(socket)


async def test_auth_with_a_fresh_token_keeps_the_socket_open_past_expiry(
    server: Server, http: httpx.AsyncClient
) -> None:
    user = await sign_up(http)
    async with (
        open_socket(server, user.token) as renewed,
        open_socket(server, user.token) as expiring,
    ):
        token = fresh_token(user)
        answer = await renewed.ask("auth", token=token)
        assert answer["expires_at"] > TTL_S * 10
        # The same first token: once the other socket is told it expired, it has.
        await expect_expired(expiring)
        await renewed.ping()
        assert (await renewed.ask("list_conversations"))["total"] == 0


async def test_auth_with_another_users_or_a_bad_token_is_refused(
    server: Server, http: httpx.AsyncClient
) -> None:
    user, other = await sign_up(http), await sign_up(http)
    async with open_socket(server, user.token) as socket:
        for token in [other.token, "not.a.token"]:
            answer, _ = await socket.request("auth", token=token)
            assert answer["type"] == "error" and answer["code"] == "not_authenticated", answer
            await socket.ping()
        # Refused renewals renewed nothing: the first token still expires the socket.
        await expect_expired(socket)
