"""`Replier`: how a conversation actor answers one message, and the state it does that with.

It generates the reply (the provider's stream inside a cancel scope and a deadline), publishes
each part to the hub, stores the reply whatever happened (also a partial one: nothing generated
is lost), then the new counts and title. It also holds what the command loop shares with the
replies: the conversation, its recent history, and store writes that survive cancellation
within a deadline. `ConversationActor` (actors/actor.py) subclasses it with the mailbox loop.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any, TypeVar

import anyio

from actors.config import ActorConfig
from actors.draft import Draft
from actors.errors import StoreTimeout
from actors.hub import Hub
from actors.observer import Observer, Unobserved
from actors.provider import (
    Provider,
    ProviderError,
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


def make_title(text: str) -> str:
    """A short title from a first message: its first words, cut at a word boundary."""
    words = " ".join(text.split())
    if len(words) <= TITLE_LENGTH:
        return words
    return words[:TITLE_LENGTH].rsplit(" ", 1)[0].rstrip(",.;:") + "…"


class Replier:
    """Generates, publishes and stores the replies of one conversation, one at a time."""

    def __init__(
        self,
        conversation: Conversation,
        *,
        store: Store,
        provider: Provider,
        hub: Hub,
        config: ActorConfig,
        observer: Observer | None = None,
    ) -> None:
        self.conversation = conversation
        self._observer = observer or Unobserved()
        self._store = store
        self._provider = provider
        self._hub = hub
        self._config = config
        self._history: list[Turn] = []
        self._reply_scope: anyio.CancelScope | None = None
        self._write_scope: anyio.CancelScope | None = None
        self._stopping = False
        # The fencing number every write carries, if any (set by `ConversationActor`).
        self._fenced: dict[str, int] = {}

    @property
    def id(self) -> uuid.UUID:
        return self.conversation.id

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

    def _end_draft(self, draft: Draft, type: str, error: str, code: str) -> None:
        """The terminal event of a reply that was not stored."""
        draft.ended = True
        self._publish(type, {"message_id": str(draft.id), "error": error, "code": code})

    async def _reply(self, question: Message, draft: Draft, *, paced: bool) -> Message:
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

    def _report(self, draft: Draft, status: str, code: str) -> None:
        """Tell the observer how the reply ended (once per reply, not per chunk)."""
        self._observer.reply_ended(draft.report(status, code))

    async def _generate(self, request: ReplyRequest, draft: Draft) -> None:
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
        self, question: Message, draft: Draft, status: str, error: str, code: str
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
