"""One open WebSocket: a small structured-concurrency unit.

A reader task takes the client's frames one at a time and hands them to the protocol; a writer
task sends what the bounded outbox holds. The hub feeds the outbox without ever waiting: a
client that stops reading fills it, and the socket is closed ("too slow") rather than let
memory grow or an actor wait. Both live in one task group; when either side ends, everything
ends, and every subscription is released. Token expiry is one sweep over all sockets
(`chat/ws/sockets.py`), not a timer per socket.
"""

from __future__ import annotations

import json
import logging
import secrets
import uuid
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from actors.events import KEEP_ALIVE, Event, reset_frame
from actors.hub import Hub, Subscriber
from chat.ws import frames
from storage.rows import User

log = logging.getLogger(__name__)

# How long the frames queued before a close may take to be written.
FLUSH_S = 5.0
# How long the close frame itself may take: a client that does not read never takes it.
CLOSE_S = 5.0
# Conversations one socket may follow at once.
MAX_FOLLOWED = 100

# Close codes (RFC 6455 §7.4.1).
NORMAL = 1000
GOING_AWAY = 1001
POLICY = 1008


class Transport(Protocol):
    """What a socket needs of the server's WebSocket (Quart's `websocket` is one)."""

    async def receive(self) -> str | bytes: ...

    async def send(self, data: str | bytes) -> None: ...


class Router(Protocol):
    async def dispatch(self, socket: ChatSocket, data: str | bytes) -> None: ...


class ChatSocket:
    """A signed-in user's socket: its outbox, its subscriptions and its lifetime."""

    def __init__(
        self, hub: Hub, user: User, expires_at: float, transport: Transport, queue_size: int
    ) -> None:
        self.id = secrets.token_hex(8)
        self.hub = hub
        self.user = user
        self.expires_at = expires_at
        self._transport = transport
        self._outbox: MemoryObjectSendStream[str]
        self._pending: MemoryObjectReceiveStream[str]
        self._outbox, self._pending = anyio.create_memory_object_stream[str](queue_size)
        self.feeds: dict[uuid.UUID, ConversationFeed] = {}
        self._user_feed = UserFeed(self)
        self._scope: anyio.CancelScope | None = None
        self._task_group: anyio.abc.TaskGroup | None = None
        # Why the server ends the socket, if it does: (code, reason).
        self.closing: tuple[int, str] | None = None

    def push(self, frame: str) -> None:
        """Queue a frame without waiting; a full outbox closes the socket (too slow)."""
        if self.closing is not None:
            return
        try:
            self._outbox.send_nowait(frame)
        except anyio.WouldBlock:
            log.warning("socket %s of user %s is too slow; closing it", self.id, self.user.id)
            self.hub.observer.subscriber_cut_off("socket_too_slow")
            self.close(POLICY, "too slow", flush=False)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            pass

    def close(self, code: int, reason: str, *, flush: bool) -> None:
        """End the socket; with `flush`, after the frames already queued are sent."""
        if self.closing is not None:
            return
        self.closing = (code, reason)
        if flush:
            # The writer sends what is queued, then finds the end of the outbox; a client that
            # does not read gets `FLUSH_S` for it.
            self._outbox.close()
            if self._scope is not None:
                self._scope.deadline = min(self._scope.deadline, anyio.current_time() + FLUSH_S)
        elif self._scope is not None:
            self._scope.cancel()

    def start_soon(self, func: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run work that must not hold up the reader (waiting for a reply), in the socket's
        own task group: it ends with the socket."""
        assert self._task_group is not None
        self._task_group.start_soon(func)

    def renew(self, expires_at: float) -> None:
        """A fresh token: the socket lives until it expires."""
        self.expires_at = expires_at

    def expire(self) -> None:
        """The token expired (`Sockets.sweep` calls this): say so, then close with 1008."""
        self.push(frames.error("token_expired", "the access token expired; sign in again"))
        self.close(POLICY, "token expired", flush=True)

    async def run(self, router: Router) -> None:
        """Serve the socket until the client leaves or the server ends it."""
        self.hub.attach_user(self._user_feed)
        try:
            async with anyio.create_task_group() as tg:
                self._scope, self._task_group = tg.cancel_scope, tg
                tg.start_soon(self._read, router)
                await self._write()
                tg.cancel_scope.cancel()
        finally:
            self._release()

    async def _read(self, router: Router) -> None:
        # A client that goes away cancels the whole socket (Quart cancels its handler). Once the
        # server ends the socket (an expired token, shutdown), no frame is carried out any
        # more, while the writer still sends what was queued.
        while self.closing is None:
            data = await self._transport.receive()
            if self.closing is None:
                await router.dispatch(self, data)

    async def _write(self) -> None:
        async with self._pending:
            async for frame in self._pending:
                await self._transport.send(frame)

    def follow(self, conversation_id: uuid.UUID) -> ConversationFeed:
        """A feed of the conversation's events into this socket (not yet attached)."""
        return ConversationFeed(self, conversation_id)

    def unfollow(self, conversation_id: uuid.UUID) -> None:
        feed = self.feeds.pop(conversation_id, None)
        if feed is not None:
            feed.close()

    def _release(self) -> None:
        self._user_feed.close()
        for feed in list(self.feeds.values()):
            feed.close()
        self.feeds.clear()
        self._outbox.close()
        self._pending.close()


class ConversationFeed(Subscriber):
    """A conversation's events, as the very bytes SSE sends in its `data:` lines."""

    def __init__(self, socket: ChatSocket, conversation_id: uuid.UUID) -> None:
        super().__init__(socket.hub, conversation_id)
        self.socket = socket
        socket.feeds[conversation_id] = self

    @property
    def reset_first(self) -> str | None:
        return None

    @reset_first.setter
    def reset_first(self, reason: str | None) -> None:
        # Told the moment the hub finds the position cannot be honoured: before any live
        # event of the conversation reaches the socket.
        if reason is not None:
            self.socket.push(reset_frame(self.topic, reason).decode())

    def offer(self, event: Event) -> None:
        if self.cut_off is not None or event is KEEP_ALIVE:
            return
        self.last_offered = anyio.current_time()
        self.socket.push(event.data.decode())

    def end(self, reason: str = "closed") -> None:
        super().end(reason)
        if reason == "gap":
            # Events from another instance were missed: reload, then `subscribe` with `since`.
            self.socket.push(reset_frame(self.topic, reason).decode())
            self.socket.feeds.pop(self.topic, None)


class UserFeed(Subscriber):
    """Everything of the user's conversations, turned into the socket's own frames:
    `new_message` from elsewhere, `notification`s of the conversation list, `typing`."""

    def __init__(self, socket: ChatSocket) -> None:
        super().__init__(socket.hub, socket.user.id)
        self.socket = socket

    def offer(self, event: Event) -> None:
        if self.cut_off is not None or event.type not in _USER_FRAMES:
            return
        body = json.loads(event.data)
        if body.get("origin") == self.socket.id:
            return
        self.last_offered = anyio.current_time()
        self.socket.push(_USER_FRAMES[event.type](body))

    def end(self, reason: str = "closed") -> None:
        super().end(reason)
        # The hub closes (shutdown, after running replies are stored): so does the socket.
        self.socket.close(GOING_AWAY, "server shutting down", flush=True)


def _new_message(body: dict[str, Any]) -> str:
    return frames.encode(
        {"type": "new_message", "conversation_id": body["conversation_id"], "data": body["message"]}
    )


def _notification(body: dict[str, Any]) -> str:
    return frames.encode(
        {
            "type": "notification",
            "notification_type": "conversation_update",
            "data": {"event": body["type"], "conversation": body["conversation"]},
        }
    )


def _typing(body: dict[str, Any]) -> str:
    return frames.encode({"type": "typing", "conversation_id": body["conversation_id"]})


_USER_FRAMES: dict[str, Callable[[dict[str, Any]], str]] = {
    "message": _new_message,
    "conversation_updated": _notification,
    "conversation_deleted": _notification,
    "typing": _typing,
}
