"""Bad input never kills a socket: each bad frame gets an `error` and the socket goes on;
only a frame over 64 KiB closes it (1009). Rate limits answer `rate_limited`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from tests.server import Server
from tests.ws.conftest import BASE, QUESTION, Socket, open_socket, serving, sign_up, ws_env

pytestmark = pytest.mark.anyio
MESSAGES_PER_MINUTE = 2
TYPING_PER_MINUTE = 3


@pytest.fixture(scope="module", name="server")
def fixture_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("ws-frames")
    env = ws_env(
        tmp,
        ws_message_rate=f"{MESSAGES_PER_MINUTE}/minute",
        ws_typing_rate=f"{TYPING_PER_MINUTE}/minute",
    )
    with serving(env, tmp) as server:
        yield server


async def expect_error(socket: Socket, data: str | bytes, code: str) -> dict[str, Any]:
    """`data` is answered with an `error` of `code`, and the socket still answers a ping."""
    await socket.conn.send(data)
    error = await socket.receive()
    assert error["type"] == "error" and error["code"] == code, (data[:80], error)
    # A sentence, or the field errors as on REST's 422.
    assert isinstance(error["error"], str | list) and error["error"]
    await socket.ping()
    return error


async def test_each_bad_frame_gets_an_error_and_the_socket_goes_on(
    server: Server, http: httpx.AsyncClient
) -> None:
    user = await sign_up(http)
    cid = (await http.post(BASE, json={}, headers=user.headers)).json()["id"]
    bad: list[tuple[str | bytes, str | set[str]]] = [
        ("not json {", "invalid_frame"),
        ("", "invalid_frame"),
        ("[1, 2, 3]", "invalid_frame"),
        ('"ping"', "invalid_frame"),
        ("null", "invalid_frame"),
        (json.dumps({"request_id": "x"}), {"validation_error", "unknown_type", "invalid_frame"}),
        (json.dumps({"type": 7}), {"validation_error", "unknown_type", "invalid_frame"}),
        (json.dumps({"type": "fly_me_to_the_moon"}), "unknown_type"),
        (json.dumps({"type": "send_message", "conversation_id": cid}), "validation_error"),
        (
            json.dumps({"type": "send_message", "conversation_id": 12, "content": "hi"}),
            "validation_error",
        ),
        (
            json.dumps({"type": "send_message", "conversation_id": cid, "content": ["hi"]}),
            "validation_error",
        ),
        (
            json.dumps({"type": "send_message", "conversation_id": cid, "content": ""}),
            "validation_error",
        ),
        (
            json.dumps({"type": "send_message", "conversation_id": cid, "content": "x" * 10_001}),
            "validation_error",
        ),
        (json.dumps({"type": "list_conversations", "limit": "many"}), "validation_error"),
        (json.dumps({"type": "list_conversations", "limit": 0}), "validation_error"),
        (
            json.dumps({"type": "get_messages", "conversation_id": cid, "limit": 201}),
            "validation_error",
        ),
        (
            json.dumps({"type": "rename_conversation", "conversation_id": cid, "title": ""}),
            "validation_error",
        ),
        (json.dumps({"type": "subscribe", "conversation_id": cid, "since": 5}), "validation_error"),
        (b"\x00\x01binary", "invalid_frame"),
        (json.dumps({"type": "ping"}).encode(), "invalid_frame"),
    ]
    async with open_socket(server, user.token) as socket:
        for data, code in bad:
            codes = {code} if isinstance(code, str) else code
            await socket.conn.send(data)
            error = await socket.receive()
            assert error["type"] == "error" and error["code"] in codes, (data[:80], error)
            assert isinstance(error["error"], str | list) and error["error"]
            await socket.ping()
        # Nothing of it was stored.
        messages = (await http.get(f"{BASE}/{cid}/messages", headers=user.headers)).json()
        assert messages["total"] == 0


async def test_an_error_echoes_the_request_id(server: Server, http: httpx.AsyncClient) -> None:
    user = await sign_up(http)
    async with open_socket(server, user.token) as socket:
        await socket.send("fly_me_to_the_moon", request_id="r-1")
        error = await socket.receive()
        assert (error["type"], error["code"], error["request_id"]) == (
            "error",
            "unknown_type",
            "r-1",
        )
        await socket.send("get_messages", request_id=9, conversation_id="not-a-conversation")
        error = await socket.receive()
        assert error["type"] == "error" and error["request_id"] == 9
        assert error["code"] in {"validation_error", "not_found"}


async def test_a_frame_just_under_64_kib_is_answered(
    server: Server, http: httpx.AsyncClient
) -> None:
    user = await sign_up(http)
    cid = (await http.post(BASE, json={}, headers=user.headers)).json()["id"]
    frame = {"type": "send_message", "conversation_id": cid, "content": ""}
    frame["content"] = "x" * (64 * 1024 - len(json.dumps(frame)) - 16)
    async with open_socket(server, user.token) as socket:
        await expect_error(socket, json.dumps(frame), "validation_error")


async def test_a_frame_over_64_kib_closes_the_socket_with_1009(
    server: Server, http: httpx.AsyncClient
) -> None:
    user = await sign_up(http)
    async with open_socket(server, user.token) as socket:
        await socket.ping()
        await socket.send("send_message", conversation_id="x", content="x" * (64 * 1024 + 1))
        with pytest.raises(ConnectionClosed) as closed:
            await socket.receive()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
    # The server itself is fine.
    assert (await http.get("/healthz")).status_code == 200


async def test_typing_over_its_rate_is_refused_and_the_socket_goes_on(
    server: Server, http: httpx.AsyncClient
) -> None:
    user = await sign_up(http)
    cid = (await http.post(BASE, json={}, headers=user.headers)).json()["id"]
    async with open_socket(server, user.token) as socket:
        for _ in range(TYPING_PER_MINUTE):
            await socket.send("typing", conversation_id=cid)
        error = await expect_error(
            socket, json.dumps({"type": "typing", "conversation_id": cid}), "rate_limited"
        )
        assert 0 < error["retry_after"] <= 60
    # The limit is the socket's: another socket of the same user may type.
    async with open_socket(server, user.token) as other, open_socket(server, user.token) as watcher:
        await other.send("typing", conversation_id=cid)
        assert await watcher.receive() == {"type": "typing", "conversation_id": cid}


async def test_send_message_over_its_rate_is_refused_and_the_socket_goes_on(
    server: Server, http: httpx.AsyncClient
) -> None:
    user = await sign_up(http)
    cid = (await http.post(BASE, json={}, headers=user.headers)).json()["id"]
    async with open_socket(server, user.token) as socket:
        for _ in range(MESSAGES_PER_MINUTE):
            answer, _ = await socket.request("send_message", conversation_id=cid, content=QUESTION)
            assert answer["type"] == "message_response", answer
        answer, _ = await socket.request("send_message", conversation_id=cid, content=QUESTION)
        assert answer["type"] == "error" and answer["code"] == "rate_limited", answer
        assert 0 < answer["retry_after"] <= 60
        await socket.ping()
        assert (await socket.ask("get_messages", conversation_id=cid))["total"] == 4
