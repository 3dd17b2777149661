"""A client that stops reading is closed ("too slow") once its bounded queue fills; the
server, its actors and the user's other sockets carry on."""

from __future__ import annotations

import socket as sockets
from collections.abc import Iterator
from urllib.parse import urlsplit

import anyio
import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from tests.server import Server
from tests.ws.conftest import BASE, QUESTION, open_socket, serving, sign_up, ws_env

pytestmark = pytest.mark.anyio
QUEUE = 64
CONVERSATIONS = 20
# Big frames fill the socket buffers between the server and the client quickly: each message
# comes back as a `message` event of about 10 KB (known words: cheap for the assistant).
BIG = (QUESTION + " ") * (9_800 // (len(QUESTION) + 1))


@pytest.fixture(scope="module", name="server")
def fixture_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("ws-slow")
    env = ws_env(tmp, ws_queue_size=str(QUEUE), ws_message_rate=f"{CONVERSATIONS * 2}/minute")
    with serving(env, tmp) as server:
        yield server


def tight_socket(server: Server) -> sockets.socket:
    """A connected TCP socket whose kernel buffers hold little: a small receive buffer and a
    small segment size (on loopback the server could otherwise buffer megabytes)."""
    address = urlsplit(server.url)
    sock = sockets.socket()
    sock.setsockopt(sockets.SOL_SOCKET, sockets.SO_RCVBUF, 4096)
    sock.setsockopt(sockets.IPPROTO_TCP, sockets.TCP_MAXSEG, 536)
    sock.connect((address.hostname, address.port))
    sock.setblocking(False)
    return sock


async def test_a_client_that_stops_reading_is_closed_and_the_server_carries_on(
    server: Server, http: httpx.AsyncClient
) -> None:
    user = await sign_up(http)
    cids = []
    for _ in range(CONVERSATIONS):
        created = await http.post(BASE, json={}, headers=user.headers)
        cids.append(created.json()["id"])
    async with open_socket(server, user.token) as watcher:
        # The socket that reads hears of each stored reply as a change of the list's counts.
        done: set[str] = set()

        async def watch() -> None:
            while len(done) < CONVERSATIONS:
                frame = await watcher.receive()
                if frame["type"] == "notification":
                    conversation = frame["data"]["conversation"]
                    if conversation["total_messages"] == 2:
                        done.add(conversation["id"])

        # max_queue=1: the client library stops reading from the network after one frame.
        async with open_socket(server, user.token, sock=tight_socket(server), max_queue=1) as slow:
            async with anyio.create_task_group() as tg:
                tg.start_soon(watch)
                for cid in cids:
                    await slow.send("send_message", conversation_id=cid, content=BIG)
            # Every reply ended, and the socket that reads was served throughout.
            await watcher.ping()
            assert (await http.get("/healthz")).status_code == 200
            # Now read: what was sent before the queue filled, then the close.
            received = 0
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    await slow.receive()
                    received += 1
        assert closed.value.rcvd is not None, "the server did not close the socket"
        assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1008, "too slow")
        # Frames were dropped, not queued without bound.
        completes = sum(f["type"] == "complete" for f in slow.frames)
        assert completes < CONVERSATIONS, received
        await watcher.ping()
    # Every message and reply was stored regardless.
    listed = (await http.get(BASE, headers=user.headers)).json()
    assert sorted(c["total_messages"] for c in listed["items"]) == [2] * CONVERSATIONS
