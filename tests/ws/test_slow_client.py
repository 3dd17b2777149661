"""A client that stops reading is closed ("too slow") once its bounded queue fills; the
server, its actors and the user's other sockets carry on.

The slow client is a raw TCP socket speaking WebSocket through `wsproto` (Hypercorn's own
protocol library): a client library would go on reading from the network into its own
buffers, and the server would never see it stop.
"""

from __future__ import annotations

import json
import socket as sockets
from collections.abc import Iterator
from urllib.parse import urlsplit

import anyio
import httpx
import pytest
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, Request, TextMessage

from tests.server import Server
from tests.ws.conftest import BASE, QUESTION, open_socket, serving, sign_up, ws_env

pytestmark = pytest.mark.anyio
QUEUE = 16
CONVERSATIONS = 20
# Each message comes back as a `message` event of about 10 KB: the socket buffers between
# server and client fill quickly (known words: cheap for the assistant).
BIG = (QUESTION + " ") * (9_800 // (len(QUESTION) + 1))


@pytest.fixture(scope="module", name="server")
def fixture_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("ws-slow")
    env = ws_env(tmp, ws_queue_size=str(QUEUE))
    with serving(env, tmp) as server:
        yield server


class RawClient:
    """A WebSocket client that reads from the network only when told to."""

    def __init__(self, server: Server, token: str) -> None:
        address = urlsplit(server.url)
        self.sock = sockets.socket()
        # A small receive window: the server's side fills after a few tens of KB.
        self.sock.setsockopt(sockets.SOL_SOCKET, sockets.SO_RCVBUF, 4096)
        self.sock.settimeout(10)
        self.sock.connect((address.hostname, address.port))
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.sock.sendall(
            self.ws.send(Request(host=address.netloc, target=f"/ws/chat?token={token}"))
        )
        while not any(isinstance(e, AcceptConnection) for e in self._read()):
            pass

    def _read(self) -> list[object]:
        data = self.sock.recv(65536)
        self.ws.receive_data(data or None)
        return list(self.ws.events())

    def send(self, frame: dict[str, object]) -> None:
        self.sock.sendall(self.ws.send(TextMessage(json.dumps(frame))))

    def read_until_closed(self) -> tuple[list[dict[str, object]], CloseConnection | None]:
        """Everything the server sent, and its close (or `None` if the stream just ended)."""
        frames: list[dict[str, object]] = []
        text = ""
        while True:
            for event in self._read():
                if isinstance(event, CloseConnection):
                    return frames, event
                if isinstance(event, TextMessage):
                    text += event.data
                    if event.message_finished:
                        frames.append(json.loads(text))
                        text = ""
            if self.ws.state.name == "CLOSED":
                return frames, None

    def close(self) -> None:
        self.sock.close()


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
        slow = await anyio.to_thread.run_sync(RawClient, server, user.token)
        try:
            # The slow client follows every conversation; the messages go in over REST, so
            # what it asked for is all taken before it is cut off.
            for cid in cids:
                frame = {"type": "subscribe", "conversation_id": cid}
                await anyio.to_thread.run_sync(slow.send, frame)
            await watcher.ping()
            for cid in cids:
                sent = await http.post(
                    f"{BASE}/{cid}/messages",
                    json={"message": BIG},
                    headers=user.headers | {"Prefer": "respond-async"},
                )
                assert sent.status_code == 202
            with anyio.fail_after(30):
                while len(done) < CONVERSATIONS:
                    frame = await watcher.receive()
                    if frame["type"] == "notification":
                        conversation = frame["data"]["conversation"]
                        if conversation["total_messages"] == 2:
                            done.add(conversation["id"])
            # Every reply ended while the slow client read nothing, and the socket that reads
            # was served throughout.
            await watcher.ping()
            assert (await http.get("/healthz")).status_code == 200
            # Now read: what was on its way before the queue filled, then the close.
            frames, closed = await anyio.to_thread.run_sync(slow.read_until_closed)
        finally:
            slow.close()
        assert closed is not None, "the server did not close the socket"
        assert (closed.code, closed.reason) == (1008, "too slow")
        # Frames were dropped, not queued without bound.
        completes = sum(f["type"] == "complete" for f in frames)
        assert completes < CONVERSATIONS, len(frames)
        await watcher.ping()
    # Every message and reply was stored regardless.
    listed = (await http.get(BASE, headers=user.headers)).json()
    assert sorted(c["total_messages"] for c in listed["items"]) == [2] * CONVERSATIONS
