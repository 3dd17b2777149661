"""The socket unit and its router, driven directly on asyncio and trio (they are anyio-only):
a transport made of memory streams stands in for the server's WebSocket."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import anyio
import pytest
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from actors.hub import Hub, HubLimits
from chat.ws import frames
from chat.ws.router import Handler, Router
from chat.ws.socket import GOING_AWAY, POLICY, ChatSocket
from chat.ws.sockets import Sockets
from storage.rows import User, now

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


class MemoryTransport:
    """The client's side is two memory streams; `reading` gates whether it reads at all."""

    def __init__(self) -> None:
        self.to_server: MemoryObjectSendStream[str | bytes]
        self._incoming: MemoryObjectReceiveStream[str | bytes]
        self.to_server, self._incoming = anyio.create_memory_object_stream[str | bytes](10)
        self._outgoing: MemoryObjectSendStream[str]
        self.from_server: MemoryObjectReceiveStream[str]
        # Unbuffered: a client that does not read blocks the writer, as a full socket would.
        self._outgoing, self.from_server = anyio.create_memory_object_stream[str](0)

    async def receive(self) -> str | bytes:
        return await self._incoming.receive()

    async def send(self, data: str | bytes) -> None:
        assert isinstance(data, str)
        await self._outgoing.send(data)

    async def next(self) -> dict[str, Any]:
        with anyio.fail_after(5):
            frame: dict[str, Any] = json.loads(await self.from_server.receive())
            return frame

    def close(self) -> None:
        for stream in (self.to_server, self._incoming, self._outgoing, self.from_server):
            stream.close()


def a_user() -> User:
    return User(
        id=uuid.uuid4(),
        email="a@b.io",
        password_hash="x",
        display_name=None,
        is_active=True,
        created_at=now(),
    )


async def echo(socket: ChatSocket, frame: frames.Ping) -> None:
    socket.push(frames.answer("pong", frame.request_id))


ROUTER = Router({"ping": Handler(frames.Ping, echo)})


async def test_bad_frames_get_errors_and_the_socket_goes_on() -> None:
    hub, transport = Hub(HubLimits()), MemoryTransport()
    socket = ChatSocket(hub, a_user(), time.time() + 60, transport, queue_size=10)
    async with anyio.create_task_group() as tg:
        tg.start_soon(socket.run, ROUTER)
        for bad, code in [
            ("{", "invalid_frame"),
            ("[1]", "invalid_frame"),
            (b"\x00", "invalid_frame"),
            ('{"type": 7}', "unknown_type"),
            ('{"type": "dance", "request_id": "r"}', "unknown_type"),
            # Nested past the JSON parser's recursion limit (it raised RecursionError, which
            # ended the socket).
            ("[" * 60_000, "invalid_frame"),
            ('{"type": "ping", "extra": 1, "request_id": 5}', "validation_error"),
        ]:
            await transport.to_server.send(bad)
            answer = await transport.next()
            assert (answer["type"], answer["code"]) == ("error", code), bad
            await transport.to_server.send('{"type": "ping", "request_id": "ok"}')
            assert await transport.next() == {"type": "pong", "request_id": "ok"}
        assert answer["request_id"] == 5
        # The client leaves: the server cancels the socket's task, as Quart does.
        tg.cancel_scope.cancel()
    assert socket.closing is None
    transport.close()


async def test_a_socket_that_does_not_read_is_closed_not_waited_for() -> None:
    hub, transport = Hub(HubLimits()), MemoryTransport()
    socket = ChatSocket(hub, a_user(), time.time() + 60, transport, queue_size=3)
    conversation_id = uuid.uuid4()
    async with anyio.create_task_group() as tg:
        tg.start_soon(socket.run, ROUTER)
        await anyio.wait_all_tasks_blocked()
        feed = socket.follow(conversation_id)
        hub.attach(feed)
        # The client reads nothing: the writer holds one frame, the outbox three, then it is full.
        for i in range(10):
            hub.publish(conversation_id, socket.user.id, "chunk", {"message_id": "m", "content": i})
    assert socket.closing == (POLICY, "too slow")
    transport.close()


async def test_the_sweep_ends_expired_sockets_with_an_error_then_1008() -> None:
    hub, sockets = Hub(HubLimits()), Sockets(max_per_user=5)
    expiring, lasting = MemoryTransport(), MemoryTransport()
    user = a_user()
    soon = ChatSocket(hub, user, time.time() + 10, expiring, queue_size=10)
    later = ChatSocket(hub, user, time.time() + 10, lasting, queue_size=10)
    sockets.add(soon)
    sockets.add(later)
    async with anyio.create_task_group() as tg:
        tg.start_soon(soon.run, ROUTER)
        tg.start_soon(later.run, ROUTER)
        await anyio.wait_all_tasks_blocked()
        # One renewed its token (an `auth` frame): only the other one is past its expiry.
        later.renew(time.time() + 60)
        sockets.expire(time.time() + 30)
        assert (await expiring.next())["code"] == "token_expired"
        await lasting.to_server.send('{"type": "ping"}')
        assert await lasting.next() == {"type": "pong"}
        tg.cancel_scope.cancel()
    assert soon.closing == (POLICY, "token expired")
    assert later.closing is None
    expiring.close()
    lasting.close()


async def test_a_closing_socket_carries_out_no_more_frames() -> None:
    hub, transport = Hub(HubLimits()), MemoryTransport()
    socket = ChatSocket(hub, a_user(), time.time() + 60, transport, queue_size=10)
    async with anyio.create_task_group() as tg:
        tg.start_soon(socket.run, ROUTER)
        await anyio.wait_all_tasks_blocked()
        socket.expire()
        # Sent after the token expired: not answered (it would run with the old token).
        await transport.to_server.send('{"type": "ping", "request_id": "late"}')
        assert (await transport.next())["code"] == "token_expired"
        with anyio.move_on_after(0.3):
            frame = await transport.next()
            pytest.fail(f"a frame after the close: {frame}")
        tg.cancel_scope.cancel()
    transport.close()


def test_the_per_user_cap_admits_and_releases() -> None:
    sockets, user = Sockets(max_per_user=2), uuid.uuid4()
    assert sockets.admit(user) and sockets.admit(user)
    assert not sockets.admit(user)
    assert sockets.admit(uuid.uuid4())
    sockets.release(user)
    assert sockets.admit(user)


async def test_hub_shutdown_closes_sockets_with_1001_after_what_is_queued() -> None:
    hub, transport = Hub(HubLimits()), MemoryTransport()
    socket = ChatSocket(hub, a_user(), time.time() + 60, transport, queue_size=10)
    conversation_id = uuid.uuid4()
    async with anyio.create_task_group() as tg:
        tg.start_soon(socket.run, ROUTER)
        await anyio.wait_all_tasks_blocked()
        hub.publish(conversation_id, socket.user.id, "conversation_updated", {"conversation": {}})
        hub.close()
        # What was queued before the close still arrives.
        assert (await transport.next())["type"] == "notification"
    assert socket.closing == (GOING_AWAY, "server shutting down")
    transport.close()
