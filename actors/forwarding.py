"""Commands for a conversation whose lease another instance holds, carried to it over Redis.

A request goes to the owner's instance channel (`parley:i:<instance>`, which its bridge
always holds) and names the channel to answer on; the owner runs it as a local command and
answers each outcome. For a `Post`: `accepted` (the stored user message, the reply's id) and
`finished` (the stored reply), or `failed`; for a `Cancel`: `cancelled` with whether a reply was
running. Everything is a frozen dataclass encoded as JSON, and every wait is bounded: a
request nobody received fails at once, one whose answers stop coming fails at its deadline.
"""

from __future__ import annotations

import json
import logging
import math
import secrets
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from redis.asyncio import Redis

from actors.commands import Accepted, PostMessage
from actors.errors import ActorUnavailable, ConversationGone
from actors.lease import FAILURES
from actors.redis_wire import instance_channel
from storage.rows import Message

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Post:
    id: str
    reply_to: str
    user_id: str
    conversation_id: str
    content: str
    idempotency_key: str | None
    paced: bool
    origin: str | None


@dataclass(frozen=True)
class Cancel:
    id: str
    reply_to: str
    user_id: str
    conversation_id: str
    # The conversation was deleted: besides stopping the reply, retire its actor.
    discard: bool = False


@dataclass(frozen=True)
class Answer:
    id: str
    # "accepted", "finished", "failed" or "cancelled".
    stage: str
    message: dict[str, Any] | None = None
    reply_id: str | None = None
    duplicate: bool = False
    # For "failed": "gone" (404) or "unavailable" (503), and what to tell the caller.
    error: str = ""
    detail: str = ""
    # For "cancelled": whether a reply was running.
    ok: bool = False


Request = Post | Cancel
_KINDS: dict[str, type[Post | Cancel | Answer]] = {"post": Post, "cancel": Cancel, "answer": Answer}


def encode(item: Post | Cancel | Answer) -> bytes:
    kind = {Post: "post", Cancel: "cancel", Answer: "answer"}[type(item)]
    return json.dumps({"kind": kind, **asdict(item)}, default=str).encode()


def decode(payload: bytes) -> Post | Cancel | Answer:
    fields = json.loads(payload)
    return _KINDS[fields.pop("kind")](**fields)


def message_fields(message: Message) -> dict[str, Any]:
    return json.loads(json.dumps(asdict(message), default=str))  # type: ignore[no-any-return]


def _error(answer: Answer) -> Exception:
    if answer.error == "gone":
        return ConversationGone()
    return ActorUnavailable(answer.detail or "the conversation is busy elsewhere, try again")


@dataclass
class _Waiting:
    deadline: float
    command: PostMessage | None = None
    # For a post: where it went, to notice that instance losing the lease.
    owner: str = ""
    conversation_id: uuid.UUID | None = None
    cancelled: anyio.Event = field(default_factory=anyio.Event)
    ok: bool = False


# Runs a forwarded post here as a local command (never forwarded again).
Local = Callable[[Post], Awaitable[PostMessage]]
LocalCancel = Callable[[Cancel], Awaitable[bool]]
# The instance holding a conversation's lease (None: nobody); raises when Redis cannot say.
Holder = Callable[[uuid.UUID], Awaitable[str | None]]


class Forwarding:
    """Sends requests to owners and answers the ones sent here; run it with `run`."""

    def __init__(
        self,
        redis: Redis,
        instance: str,
        *,
        timeout_s: float,
        accept_s: float,
        finish_s: float,
    ) -> None:
        self.redis = redis
        self.instance = instance
        self.timeout_s = timeout_s
        self.accept_s = accept_s
        self.finish_s = finish_s
        self.local_post: Local | None = None
        self.local_cancel: LocalCancel | None = None
        self.holder: Holder | None = None
        self._waiting: dict[str, _Waiting] = {}
        self._requests: MemoryObjectSendStream[Request]
        self._incoming: MemoryObjectReceiveStream[Request]
        self._requests, self._incoming = anyio.create_memory_object_stream[Request](math.inf)

    # The forwarding side.

    async def post(self, owner: str, conversation_id: uuid.UUID, command: PostMessage) -> bool:
        """Send `command` to `owner`; its outcomes are fulfilled as the answers come. False if
        no instance is listening there (the owner is gone)."""
        request = Post(
            secrets.token_hex(8),
            self.instance,
            str(command.user_id),
            str(conversation_id),
            command.content,
            command.idempotency_key,
            command.paced,
            command.origin,
        )
        waiting = _Waiting(anyio.current_time() + self.accept_s, command, owner, conversation_id)
        self._waiting[request.id] = waiting
        if not await self._send(owner, request):
            del self._waiting[request.id]
            return False
        return True

    async def cancel(
        self, owner: str, user_id: uuid.UUID, conversation_id: uuid.UUID, discard: bool = False
    ) -> bool:
        """Ask `owner` to stop the conversation's reply (and, with `discard`, retire its
        actor); whether a reply was running there."""
        request = Cancel(
            secrets.token_hex(8), self.instance, str(user_id), str(conversation_id), discard
        )
        waiting = _Waiting(anyio.current_time() + self.timeout_s)
        self._waiting[request.id] = waiting
        try:
            if not await self._send(owner, request):
                return False
            with anyio.move_on_after(self.timeout_s):
                await waiting.cancelled.wait()
            return waiting.ok
        finally:
            self._waiting.pop(request.id, None)

    async def _send(self, instance: str, item: Post | Cancel | Answer) -> bool:
        try:
            with anyio.fail_after(self.timeout_s):
                receivers = await self.redis.publish(instance_channel(instance), encode(item))
        except FAILURES as error:
            log.warning("forwarding to %s failed (%s)", instance, type(error).__name__)
            return False
        return bool(receivers)

    def receive(self, payload: bytes) -> None:
        """A message on this instance's channel (called by the bridge's reader)."""
        try:
            item = decode(payload)
        except (ValueError, KeyError, TypeError):
            log.warning("unreadable message on the instance channel: %.100r", payload)
            return
        if isinstance(item, Answer):
            self._answered(item)
        else:
            self._requests.send_nowait(item)

    def _answered(self, answer: Answer) -> None:
        waiting = self._waiting.get(answer.id)
        if waiting is None:
            return
        if waiting.command is None:
            waiting.ok = answer.ok
            waiting.cancelled.set()
            return
        command = waiting.command
        if answer.stage == "accepted" and answer.message is not None:
            message = Message.from_row(answer.message)
            reply_id = uuid.UUID(answer.reply_id)
            command.accepted.set(Accepted(message, reply_id, answer.duplicate))
            waiting.deadline = anyio.current_time() + self.finish_s
        elif answer.stage == "finished" and answer.message is not None:
            command.finished.set(Message.from_row(answer.message))
            del self._waiting[answer.id]
        else:
            command.fail(_error(answer))
            del self._waiting[answer.id]

    # The owner's side.

    async def run(self) -> None:
        """Answer the requests sent here; fail the forwarded commands past their deadline or
        whose owner lost the lease (it died or was paused: no answer is coming)."""
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._expire)
                async for request in self._incoming:
                    tg.start_soon(self._serve, request)
        finally:
            for key in list(self._waiting):
                self._give_up(key, "the service is shutting down")

    def _give_up(self, key: str, why: str) -> None:
        waiting = self._waiting.pop(key, None)
        if waiting is None:
            return  # answered meanwhile
        if waiting.command is not None:
            waiting.command.fail(ActorUnavailable(why))
        else:
            waiting.cancelled.set()

    async def _expire(self) -> None:
        gone = "the instance answering this conversation went away, try again"
        while True:
            await anyio.sleep(self.timeout_s)
            now = anyio.current_time()
            holders: dict[uuid.UUID, str | None] = {}
            for key, waiting in list(self._waiting.items()):
                if waiting.command is None or waiting.conversation_id is None:
                    continue
                if waiting.deadline < now:
                    self._give_up(key, gone)
                    continue
                cid = waiting.conversation_id
                if cid not in holders and self.holder is not None:
                    try:
                        holders[cid] = await self.holder(cid)
                    except FAILURES:
                        continue  # Redis cannot say: the deadline still holds
                if cid in holders and holders[cid] != waiting.owner:
                    self._give_up(key, gone)

    async def _serve(self, request: Request) -> None:
        if isinstance(request, Cancel):
            ok = False
            if self.local_cancel is not None:
                ok = await self.local_cancel(request)
            await self._send(request.reply_to, Answer(request.id, "cancelled", ok=ok))
            return
        try:
            if self.local_post is None:
                raise ActorUnavailable("this instance is not serving conversations")
            command = await self.local_post(request)
            with anyio.fail_after(self.accept_s):
                accepted = await command.accepted.wait()
            await self._send(
                request.reply_to,
                Answer(
                    request.id,
                    "accepted",
                    message_fields(accepted.message),
                    str(accepted.reply_id),
                    accepted.duplicate,
                ),
            )
            with anyio.fail_after(self.finish_s):
                reply = await command.finished.wait()
            await self._send(
                request.reply_to, Answer(request.id, "finished", message_fields(reply))
            )
        except ConversationGone:
            await self._send(request.reply_to, Answer(request.id, "failed", error="gone"))
        except (ActorUnavailable, TimeoutError) as error:
            detail = str(error) if isinstance(error, ActorUnavailable) else ""
            await self._send(
                request.reply_to,
                Answer(request.id, "failed", error="unavailable", detail=detail),
            )
        except Exception:
            # The caller elsewhere must hear something; this instance goes on.
            log.exception("a forwarded message for %s failed", request.conversation_id)
            await self._send(request.reply_to, Answer(request.id, "failed", error="unavailable"))
