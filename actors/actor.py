"""`ConversationActor`: one task per live conversation, one command at a time."""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import anyio
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream

from actors.commands import Accepted, Command, PostMessage
from actors.errors import ActorUnavailable, ConversationGone, StoreTimeout
from actors.hub import Hub
from actors.lease import UNFENCED, Leases
from actors.observer import Observer, ReplyReport, Unobserved
from actors.provider import (
    Provider,
    ProviderError,
    ReplyInfo,
    ReplyRequest,
    TextDelta,
    ToolCall,
    ToolResult,
    Turn,
)
from actors.store import Store
from actors.wire import conversation_json, message_json
from storage.errors import Fenced, NotFound
from storage.rows import Conversation, Message

log = logging.getLogger(__name__)

TITLE_LENGTH = 60
T = TypeVar("T")


@dataclass(frozen=True)
class ActorConfig:
    idle_s: float = 300.0
    max_live: int = 10_000
    mailbox_size: int = 64
    history_messages: int = 50
    reply_timeout_s: float = 300.0
    # How long one write may take once shutdown has cut replies short: the part of the
    # shutdown budget that comes after the grace period (docs/design.md).
    store_deadline_s: float = 3.0
    # How long one write may take otherwise: a loaded database may queue writes for seconds
    # (seen at 500 streams on PostgreSQL), and a reply must not be lost for that.
    write_timeout_s: float = 60.0
    # A conversation whose actor crashes more often than this is refused for a while.
    max_restarts: int = 5
    restart_window_s: float = 60.0


def make_title(text: str) -> str:
    """A short title from a first message: its first words, cut at a word boundary."""
    words = " ".join(text.split())
    if len(words) <= TITLE_LENGTH:
        return words
    return words[:TITLE_LENGTH].rsplit(" ", 1)[0].rstrip(",.;:") + "…"


@dataclass
class _Draft:
    """The reply being generated: what the provider has said so far."""

    id: uuid.UUID
    parts: list[str]
    info: dict[str, Any]
    # Set once its terminal event (`complete`, `cancelled` or `error`) is published.
    ended: bool = False
    # When generation started and when its first text came (`anyio.current_time()`).
    started_at: float = 0.0
    first_text_at: float | None = None

    def merge(self, info: ReplyInfo) -> None:
        for name in ("model", "confidence", "prompt_tokens", "completion_tokens"):
            value = getattr(info, name)
            if value is not None:
                self.info[name] = value
        for name in ("entity_references", "entity_links"):
            if getattr(info, name):
                self.info[name] = getattr(info, name)


class ConversationActor:
    """Owns a conversation's history and its inference stream.

    Commands arrive through a bounded mailbox and are handled one at a time, so replies in
    one conversation never interleave. Everything it stores it also publishes to the hub.
    """

    def __init__(
        self,
        conversation: Conversation,
        *,
        store: Store,
        provider: Provider,
        hub: Hub,
        config: ActorConfig,
        on_idle: Callable[[ConversationActor], None],
        leases: Leases | None = None,
        observer: Observer | None = None,
    ) -> None:
        self.conversation = conversation
        self._observer = observer or Unobserved()
        self.current: Command | None = None
        self._store = store
        self._provider = provider
        self._hub = hub
        self._config = config
        self._on_idle = on_idle
        self._history: list[Turn] = []
        self._reply_scope: anyio.CancelScope | None = None
        self._write_scope: anyio.CancelScope | None = None
        self._stopping = False
        self._ready = False
        # With a cluster: the fencing number every write carries (actors/lease.py), fixed
        # for this actor's life; without a lease (Redis away) its writes are not fenced.
        self._leases = leases
        self._fenced: dict[str, int] = {}
        if leases is not None:
            self._fenced = {"fence": leases.fence(conversation.id) or UNFENCED}

    @property
    def id(self) -> uuid.UUID:
        return self.conversation.id

    @property
    def busy(self) -> bool:
        """Loading its history, or handling a command: not to be retired for the cap."""
        return not self._ready or self.current is not None

    @property
    def replying(self) -> bool:
        """Generating a reply right now."""
        return self._reply_scope is not None

    def cancel_reply(self) -> bool:
        """Stop the reply being generated, if any; what it said so far is kept."""
        if self._reply_scope is None:
            return False
        self._reply_scope.cancel()
        return True

    async def run(
        self,
        inbox: MemoryObjectReceiveStream[Command],
        *,
        task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Load the history, then handle commands until idle or the mailbox is closed."""
        recent = await self._store.load_history(
            self.conversation.user_id, self.id, self._config.history_messages
        )
        self._history = [Turn(m.role, m.content) for m in recent]
        self._ready = True
        task_status.started()
        # The mailbox is the supervisor's to close: after a crash it hands what is still
        # queued to the next actor.
        while True:
            command: Command | None = None
            with anyio.move_on_after(self._config.idle_s):
                try:
                    command = await inbox.receive()
                except anyio.EndOfStream:
                    return
            if command is None:
                # Idle: the registry forgets us and closes the mailbox without an await, so a
                # command is either already queued (and handled next) or goes to a new actor.
                self._on_idle(self)
                continue
            # Left set if `_post` raises: the supervisor fails that command's caller.
            self.current = command
            try:
                await self._post(command)
            except NotFound:
                # Deleted meanwhile: nothing to store it in. Retire; queued commands fail alike.
                log.info("conversation %s is gone; its actor stops", self.id)
                command.fail(ConversationGone())
                self._on_idle(self)
            except StoreTimeout as failure:
                command.fail(failure)
            except Fenced:
                # Another instance holds the lease now: write nothing more, take nothing new.
                log.warning("conversation %s moved to another instance; its actor stops", self.id)
                command.fail(ActorUnavailable("the conversation moved, try again"))
                self._on_idle(self)
            self.current = None

    def _publish(self, type: str, payload: dict[str, Any]) -> None:
        self._hub.publish(self.id, self.conversation.user_id, type, payload)

    def _remember(self, turn: Turn) -> None:
        self._history.append(turn)
        del self._history[: -self._config.history_messages]

    async def _write(self, operation: Callable[[], Awaitable[T]]) -> T:
        """Run a store write to its end even if we are being cancelled, within its deadline.

        A write cut half-way can lose a reply and leave its connection broken (databases
        #457). The deadline keeps a stuck database from holding the actor (`TimeoutError`
        then): `write_timeout_s` normally, `store_deadline_s` once shutdown began.
        """
        limit = self._config.store_deadline_s if self._stopping else self._config.write_timeout_s
        with anyio.fail_after(limit, shield=True) as scope:
            self._write_scope = scope
            try:
                return await operation()
            finally:
                self._write_scope = None

    def stop_soon(self) -> None:
        """Shutdown is about to cancel this actor: its writes get the short deadline, also one
        already under way."""
        self._stopping = True
        if self._write_scope is not None:
            soon = anyio.current_time() + self._config.store_deadline_s
            self._write_scope.deadline = min(self._write_scope.deadline, soon)

    async def _post(self, command: PostMessage) -> None:
        try:
            message, new = await self._write(
                lambda: self._store.insert_message(
                    user_id=command.user_id,
                    conversation_id=self.id,
                    role="user",
                    content=command.content,
                    idempotency_key=command.idempotency_key,
                    **self._fenced,
                )
            )
        except TimeoutError:
            log.warning("storing a message in conversation %s timed out", self.id)
            command.fail(ActorUnavailable("the database did not answer in time, try again"))
            return
        if not new:
            reply = await self._store.reply_after(self.conversation.user_id, self.id, message.seq)
            if reply is not None:
                command.accepted.set(Accepted(message, reply.id, duplicate=True))
                command.finished.set(reply)
                return
            # The first attempt's reply was never stored (its actor crashed): answer now.
        else:
            self._remember(Turn("user", message.content))
            self.conversation = replace(
                self.conversation, total_messages=message.seq, updated_at=message.created_at
            )
            stored: dict[str, Any] = {"message": message_json(message)}
            if command.origin is not None:
                stored["origin"] = command.origin
            self._publish("message", stored)
        draft = _Draft(uuid.uuid4(), [], {})
        if self._leases is not None:
            # Whoever takes the conversation over if we die can end this reply (lease.py).
            await self._leases.mark_reply(self.id, draft.id)
        command.accepted.set(Accepted(message, draft.id, duplicate=not new))
        try:
            reply = await self._reply(message, draft, paced=command.paced)
        finally:
            if not draft.ended:
                # Whatever stopped us, the reply's watchers must learn that it ended.
                self._end_draft(draft, "error", "the reply was lost", "internal_error")
        if self._leases is not None:
            await self._leases.mark_reply(self.id, None)
        command.finished.set(reply)

    def _end_draft(self, draft: _Draft, type: str, error: str, code: str) -> None:
        """The terminal event of a reply that was not stored."""
        draft.ended = True
        self._publish(type, {"message_id": str(draft.id), "error": error, "code": code})

    async def _reply(self, question: Message, draft: _Draft, *, paced: bool) -> Message:
        """Stream the provider's answer, publish it, and store it whatever happens."""
        request = ReplyRequest(
            self.id, self.conversation.user_id, tuple(self._history), paced=paced
        )
        status, error, code = "complete", "", ""
        crash: Exception | None = None
        scope = self._reply_scope = anyio.CancelScope()
        draft.started_at = anyio.current_time()
        try:
            with scope, anyio.fail_after(self._config.reply_timeout_s):
                await self._generate(request, draft)
        except ProviderError as failure:
            status, error, code = "failed", str(failure), failure.code
        except TimeoutError:
            status, error, code = "failed", "the reply took too long", "timeout"
        except anyio.get_cancelled_exc_class():
            # Shutdown past its grace period: keep what was generated, then stop. A failure
            # to store is already told by the terminal event; the cancellation goes on.
            self._report(draft, "cancelled", "shutdown")
            with contextlib.suppress(Exception):
                await self._finish(
                    question, draft, "cancelled", "the service is shutting down", "shutdown"
                )
            raise
        except Exception as failure:
            log.exception("provider crashed in conversation %s", self.id)
            status, error, code, crash = "failed", "the assistant failed", "internal_error", failure
        finally:
            self._reply_scope = None
        if scope.cancelled_caught:
            status, error, code = "cancelled", "cancelled", "cancelled"
        elif status == "failed" and crash is None:
            log.warning("reply failed in conversation %s: %s: %s", self.id, code, error)
        self._report(draft, status, code)
        reply = await self._finish(question, draft, status, error, code)
        if crash is not None:
            raise crash
        return reply

    def _report(self, draft: _Draft, status: str, code: str) -> None:
        """Tell the observer how the reply ended (once per reply, not per chunk)."""
        now = anyio.current_time()
        first = draft.first_text_at
        tokens = draft.info.get("completion_tokens") or len(draft.parts)
        self._observer.reply_ended(
            ReplyReport(
                status=status,
                code="" if status == "complete" else code,
                duration_s=now - draft.started_at,
                first_token_s=None if first is None else first - draft.started_at,
                tokens=int(tokens),
            )
        )

    async def _generate(self, request: ReplyRequest, draft: _Draft) -> None:
        message_id = str(draft.id)
        async with contextlib.aclosing(self._provider.stream(request)) as parts:
            async for part in parts:
                if isinstance(part, TextDelta):
                    if part.text:
                        if draft.first_text_at is None:
                            draft.first_text_at = anyio.current_time()
                        draft.parts.append(part.text)
                        self._publish("chunk", {"message_id": message_id, "content": part.text})
                elif isinstance(part, ToolCall):
                    self._publish(
                        "tool_call",
                        {"message_id": message_id, "name": part.name, "arguments": part.arguments},
                    )
                elif isinstance(part, ToolResult):
                    self._publish(
                        "tool_result", {"message_id": message_id, "name": part.name, "ok": part.ok}
                    )
                else:
                    draft.merge(part)

    async def _finish(
        self, question: Message, draft: _Draft, status: str, error: str, code: str
    ) -> Message:
        """Store the reply (shielded) and publish its terminal event, then the new counts.

        If it cannot be stored, the terminal event says so and the error goes on: a deleted
        conversation retires the actor, anything else is a crash (the actor restarts).
        """
        content = "".join(draft.parts)
        info = draft.info
        tokens = (info.get("prompt_tokens") or 0) + (info.get("completion_tokens") or 0)
        try:
            reply, _ = await self._write(
                lambda: self._store.insert_message(
                    user_id=self.conversation.user_id,
                    conversation_id=self.id,
                    role="assistant",
                    content=content,
                    status=status,
                    message_id=draft.id,
                    model_used=info.get("model"),
                    confidence_score=info.get("confidence"),
                    entity_references=info.get("entity_references", []),
                    entity_links=info.get("entity_links", []),
                    prompt_tokens=info.get("prompt_tokens"),
                    completion_tokens=info.get("completion_tokens"),
                    tokens_used=tokens,
                    error_code=code or None,
                    error_detail=error or None,
                    **self._fenced,
                )
            )
        except Fenced:
            # The new holder of the lease ends this reply for its watchers; nothing is stored.
            draft.ended = True
            raise
        except NotFound:
            self._end_draft(
                draft, "cancelled", "the conversation was deleted", "conversation_deleted"
            )
            raise
        except TimeoutError:
            # The database is slow or away, not the actor broken: the caller is told, and the
            # actor goes on (a restart would only count against the conversation).
            self._end_draft(draft, "error", "the reply could not be stored", "store_failed")
            log.warning("storing a reply in conversation %s timed out", self.id)
            raise StoreTimeout("the reply could not be stored in time, try again") from None
        except Exception:
            self._end_draft(draft, "error", "the reply could not be stored", "store_failed")
            raise
        if content:
            self._remember(Turn("assistant", content))
        draft.ended = True
        payload = {"message_id": str(reply.id), "message": message_json(reply)}
        if status == "complete":
            self._publish("complete", {"message": message_json(reply)})
        elif status == "cancelled":
            self._publish("cancelled", {**payload, "error": error, "code": code})
        else:
            self._publish("error", {**payload, "error": error, "code": code})
        self.conversation = replace(
            self.conversation, total_messages=reply.seq, updated_at=reply.created_at
        )
        await self._title(question)
        return reply

    async def _title(self, question: Message) -> None:
        """Publish the new counts, and after the first reply a title made from the question."""
        if question.seq == 1 and not self.conversation.title_set_by_user:
            try:
                titled = await self._write(
                    lambda: self._store.auto_title(
                        self.conversation.user_id, self.id, make_title(question.content)
                    )
                )
            except Exception:
                # A title is a nicety: the reply is stored; the conversation keeps its old title.
                log.warning("titling conversation %s failed", self.id, exc_info=True)
                titled = None
            if titled is not None:
                self.conversation = replace(
                    titled,
                    total_messages=max(titled.total_messages, self.conversation.total_messages),
                )
        self._publish(
            "conversation_updated", {"conversation": conversation_json(self.conversation)}
        )
