"""The `chat` protocol's handler set: every frame calls the same operations as REST does."""

from __future__ import annotations

import logging
import time
from typing import Any

from limits import RateLimitItem, parse
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from actors.wire import conversation_json, message_json
from chat import operations
from chat.credentials import authenticate, unauthenticated
from chat.errors import APIError, describe
from chat.services import Services
from chat.ws import frames
from chat.ws.router import Handler, Router
from chat.ws.socket import MAX_FOLLOWED, ChatSocket

log = logging.getLogger(__name__)


class Limits:
    """Per-socket rate limits (the `limits` library's moving window), one store per process."""

    def __init__(self, message_rate: str, typing_rate: str) -> None:
        self._limiter = MovingWindowRateLimiter(MemoryStorage())
        self.message: RateLimitItem = parse(message_rate)
        self.typing: RateLimitItem = parse(typing_rate)

    def retry_after(self, item: RateLimitItem, socket: ChatSocket) -> float | None:
        """`None` if the socket may go on, else the seconds until it may."""
        if self._limiter.hit(item, socket.id):
            return None
        reset_at, _ = self._limiter.get_window_stats(item, socket.id)
        return max(0.0, round(reset_at - time.time(), 3))


def chat_protocol(found: Services) -> Router:
    """The router of the `chat` protocol, bound to one app's services."""
    settings = found.settings
    rates = Limits(settings.ws_message_rate, settings.ws_typing_rate)

    def limited(socket: ChatSocket, item: RateLimitItem, frame: frames.ClientFrame) -> bool:
        retry_after = rates.retry_after(item, socket)
        if retry_after is None:
            return False
        socket.push(
            frames.error(
                "rate_limited",
                f"too many {frame.type} frames; try again in {retry_after:g} s",
                frame.request_id,
                retry_after=retry_after,
            )
        )
        return True

    def respond(socket: ChatSocket, frame: frames.ClientFrame, data: Any) -> None:
        socket.push(frames.answer("response", frame.request_id, action=frame.type, data=data))

    async def ping(socket: ChatSocket, frame: frames.Ping) -> None:
        socket.push(frames.answer("pong", frame.request_id))

    async def auth(socket: ChatSocket, frame: frames.Auth) -> None:
        user = await authenticate(found.db, found.tokens, found.users, frame.token)
        if user.id != socket.user.id:
            raise unauthenticated("the token is another user's")
        _, expires_at = found.tokens.check(frame.token)
        socket.renew(expires_at)
        respond(socket, frame, {"expires_at": int(expires_at)})

    async def follow(socket: ChatSocket, conversation_id: Any, since: str | None) -> None:
        """Follow an owned conversation, replacing any earlier feed of it. The hub subscribes
        before it replays (from Redis when the bridge is on), so nothing is missed."""
        socket.unfollow(conversation_id)
        if len(socket.feeds) >= MAX_FOLLOWED:
            raise APIError(
                429, "too_many_subscriptions", f"a socket follows at most {MAX_FOLLOWED}"
            )
        feed = socket.follow(conversation_id)
        await found.hub.follow(feed, operations.parse_position(since))

    async def create_conversation(socket: ChatSocket, frame: frames.CreateConversation) -> None:
        conversation = await operations.create_conversation(found, socket.user.id, frame.title)
        await follow(socket, conversation.id, None)
        respond(socket, frame, conversation_json(conversation))

    async def list_conversations(socket: ChatSocket, frame: frames.ListConversations) -> None:
        page = await operations.list_conversations(
            found, socket.user.id, offset=frame.offset, limit=frame.limit
        )
        respond(socket, frame, page)

    async def get_messages(socket: ChatSocket, frame: frames.GetMessages) -> None:
        page = await operations.get_messages(
            found, socket.user.id, frame.conversation_id, offset=frame.offset, limit=frame.limit
        )
        respond(socket, frame, page)

    async def rename_conversation(socket: ChatSocket, frame: frames.RenameConversation) -> None:
        conversation = await operations.rename_conversation(
            found, socket.user.id, frame.conversation_id, frame.title
        )
        respond(socket, frame, conversation_json(conversation))

    async def delete_conversation(socket: ChatSocket, frame: frames.DeleteConversation) -> None:
        await operations.delete_conversation(found, socket.user.id, frame.conversation_id)
        socket.unfollow(frame.conversation_id)
        respond(socket, frame, None)

    async def send_message(socket: ChatSocket, frame: frames.SendMessage) -> None:
        if limited(socket, rates.message, frame):
            return
        key = operations.check_idempotency_key(frame.client_message_id)
        if frame.conversation_id not in socket.feeds:
            # Followed before sending, so not even the stored message's event is missed.
            await operations.check_owner(found, socket.user.id, frame.conversation_id)
            await follow(socket, frame.conversation_id, None)
        # Into the mailbox here, so one socket's messages keep their order; the waits happen
        # in a task of the socket's own, so the reader goes on (a `cancel` must get through
        # while an earlier reply is still running).
        command = await operations.post_message(
            found, socket.user.id, frame.conversation_id, frame.content, key, origin=socket.id
        )

        async def answer() -> None:
            try:
                await operations.accepted(command)
                reply = await command.finished.wait()
            except Exception as failure:
                described = describe(failure)
                if described is None:
                    log.exception("a reply to a WebSocket failed")
                    described = (500, "internal_error", "internal server error")
                socket.push(frames.error(described[1], described[2], frame.request_id))
                return
            data = message_json(reply)
            socket.push(frames.answer("message_response", frame.request_id, data=data))

        socket.start_soon(answer)

    async def subscribe(socket: ChatSocket, frame: frames.Subscribe) -> None:
        await operations.check_owner(found, socket.user.id, frame.conversation_id)
        # Answered first, so the replay that follows is not mistaken for the answer's cause.
        respond(socket, frame, {"conversation_id": str(frame.conversation_id)})
        await follow(socket, frame.conversation_id, frame.since)

    async def unsubscribe(socket: ChatSocket, frame: frames.Unsubscribe) -> None:
        socket.unfollow(frame.conversation_id)
        respond(socket, frame, {"conversation_id": str(frame.conversation_id)})

    async def cancel(socket: ChatSocket, frame: frames.Cancel) -> None:
        cancelled = await operations.cancel_reply(found, socket.user.id, frame.conversation_id)
        respond(socket, frame, {"cancelled": cancelled})

    async def typing(socket: ChatSocket, frame: frames.Typing) -> None:
        if limited(socket, rates.typing, frame):
            return
        await operations.check_owner(found, socket.user.id, frame.conversation_id)
        found.hub.signal(frame.conversation_id, socket.user.id, "typing", {"origin": socket.id})

    handlers: dict[str, Handler[Any]] = {
        "ping": Handler(frames.Ping, ping),
        "auth": Handler(frames.Auth, auth),
        "create_conversation": Handler(frames.CreateConversation, create_conversation),
        "list_conversations": Handler(frames.ListConversations, list_conversations),
        "get_messages": Handler(frames.GetMessages, get_messages),
        "rename_conversation": Handler(frames.RenameConversation, rename_conversation),
        "delete_conversation": Handler(frames.DeleteConversation, delete_conversation),
        "send_message": Handler(frames.SendMessage, send_message),
        "subscribe": Handler(frames.Subscribe, subscribe),
        "unsubscribe": Handler(frames.Unsubscribe, unsubscribe),
        "cancel": Handler(frames.Cancel, cancel),
        "typing": Handler(frames.Typing, typing),
    }
    return Router(handlers)
