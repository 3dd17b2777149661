"""WebSocket end-to-end helpers: a real `parley serve`, real users, a thin `websockets` client.

Every test module starts its own server (module scope) with the settings it tests; the
helpers here talk to it only through its public surface: HTTP, the WebSocket and the CLI.
"""

from __future__ import annotations

import itertools
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect

from tests.server import Server, parley, running_server, server_env
from tests.tokens import claims, sign

BASE = "/api/v1/chat/conversations"
QUESTION = "How do I reset my password?"
SECRET = "ws-test-secret-" + "z" * 40
# Frame types that answer a client frame carrying `request_id`.
ANSWERS = {"response", "pong", "error", "message_response"}
# The §4 events of a conversation: numbered, the same bytes as on SSE.
FINAL = {"complete", "cancelled", "error"}
WAIT_S = 10.0
Frame = dict[str, Any]


def ws_env(tmp: Path, **settings: str) -> dict[str, str]:
    """The environment of a server for these tests: a known secret, quick replies."""
    defaults = {"jwt_secret": SECRET, "assistant_token_delay_ms": "10"}
    # With a JWT_SECRET given, nothing else makes the folder the SQLite database goes in.
    (tmp / "var").mkdir(exist_ok=True)
    return server_env(tmp, **(defaults | settings))


@contextmanager
def serving(env: dict[str, str], tmp: Path) -> Iterator[Server]:
    """Migrate and serve; on the way out, stop it as a process manager would and expect a
    clean exit and no traceback in its log."""
    parley("migrate", env=env)
    with running_server(env, tmp / "server.log") as server:
        yield server
        assert server.stop() == 0
    assert "Traceback" not in server.log_text()


def ws_url(server: Server, token: str | None = None) -> str:
    url = server.url.replace("http://", "ws://", 1) + "/ws/chat"
    return url if token is None else f"{url}?token={token}"


@dataclass
class User:
    email: str
    password: str
    token: str
    id: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


async def sign_up(http: httpx.AsyncClient) -> User:
    """A new user, registered and logged in over REST."""
    email = f"ws-{uuid.uuid4().hex[:10]}@example.com"
    body = {"email": email, "password": "password-1"}
    registered = await http.post("/auth/register", json=body)
    assert registered.status_code == 201, registered.text
    login = await http.post("/auth/login", json=body)
    assert login.status_code == 200, login.text
    return User(email, "password-1", login.json()["access_token"], registered.json()["id"])


def forged(user_id: str, secret: str = SECRET, **overrides: Any) -> str:
    """A token signed with `secret` (the server's by default) with the given claims."""
    return sign({"alg": "HS256", "typ": "JWT"}, claims(user_id, **overrides), secret)


def fresh_token(user: User) -> str:
    """A valid token of `user` that outlives any short-lived one the server issued."""
    at = int(time.time())
    return forged(user.id, iat=at, exp=at + 600)


@dataclass
class Socket:
    """One client WebSocket: JSON frames out, every frame received kept in order."""

    conn: ClientConnection
    frames: list[Frame] = field(default_factory=list)
    raw: list[str] = field(default_factory=list)
    _ids: Iterator[int] = field(default_factory=itertools.count)

    async def send(self, type: str, **fields: Any) -> None:
        await self.conn.send(json.dumps({"type": type, **fields}))

    async def receive(self) -> Frame:
        """The next frame (text, JSON object), within `WAIT_S`."""
        with anyio.fail_after(WAIT_S):
            data = await self.conn.recv()
        assert isinstance(data, str), f"a binary frame from the server: {data!r}"
        frame = json.loads(data)
        assert isinstance(frame, dict) and "type" in frame, data
        self.frames.append(frame)
        self.raw.append(data)
        return frame

    async def until(self, done: Callable[[Frame], bool]) -> list[Frame]:
        """Frames received up to and including the first for which `done` holds."""
        got: list[Frame] = []
        with anyio.fail_after(WAIT_S):
            while True:
                got.append(await self.receive())
                if done(got[-1]):
                    return got

    async def request(self, type: str, **fields: Any) -> tuple[Frame, list[Frame]]:
        """Send a frame with a fresh `request_id`; its answer and the frames before it."""
        request_id = f"r{next(self._ids)}"
        await self.send(type, request_id=request_id, **fields)
        got = await self.until(lambda f: f.get("request_id") == request_id and f["type"] in ANSWERS)
        return got[-1], got[:-1]

    async def ask(self, type: str, **fields: Any) -> Any:
        """A request that must succeed: the `data` of its `response`."""
        answer, _ = await self.request(type, **fields)
        assert answer["type"] == "response" and answer["action"] == type, answer
        return answer.get("data")

    async def ping(self) -> None:
        """A round trip: the socket is open and answering."""
        answer, _ = await self.request("ping")
        assert answer["type"] == "pong", answer

    async def events(self, conversation_id: str, until: set[str] = FINAL) -> list[Frame]:
        """The numbered §4 events of one conversation, up to the first of a type in `until`."""
        got = await self.until(
            lambda f: (
                f["type"] in until and f.get("conversation_id") == conversation_id and "seq" in f
            )
        )
        return [f for f in got if is_event(f, conversation_id)]


def is_event(frame: Frame, conversation_id: str) -> bool:
    """A numbered §4 event of the conversation (not a notification, answer or `reset`)."""
    return frame.get("conversation_id") == conversation_id and "seq" in frame


@asynccontextmanager
async def open_socket(
    server: Server, token: str | None, *, header: bool = False, **options: Any
) -> AsyncIterator[Socket]:
    """A socket authenticated with `token`, in the query string or else in `Authorization`."""
    url = ws_url(server, None if header else token)
    if header:
        options["additional_headers"] = {"Authorization": f"Bearer {token}"}
    async with connect(url, open_timeout=WAIT_S, close_timeout=2, **options) as conn:
        yield Socket(conn)


async def eventually(check: Callable[[], Awaitable[bool]]) -> None:
    """Wait until `check()` holds, for what no event announces (a log line written, a closed
    socket forgotten): a bounded poll."""
    with anyio.fail_after(WAIT_S):
        while True:
            if await check():
                return
            await anyio.sleep(0.05)


def check_numbering(events: list[Frame]) -> None:
    """One epoch, consecutive `seq`s."""
    seqs = [e["seq"] for e in events]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), seqs
    assert len({e["epoch"] for e in events}) == 1, events


@pytest.fixture(name="http")
async def fixture_http(server: Server) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client of the module's `server` fixture."""
    async with httpx.AsyncClient(base_url=server.url, timeout=20) as client:
        yield client
