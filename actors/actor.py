"""`ConversationActor`: one task per live conversation, one command at a time.

This module holds the actor's command loop: loading the history, taking commands from the
mailbox until idle or closed, storing each user message and handing it to the reply
(actors/reply.py: generation, publication and storage of the reply, which the actor inherits).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import anyio
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream

from actors.commands import Accepted, Command, PostMessage
from actors.config import ActorConfig
from actors.draft import Draft
from actors.errors import ActorUnavailable, ConversationGone, StoreTimeout
from actors.hub import Hub
from actors.lease import UNFENCED, Leases
from actors.observer import Observer
from actors.provider import Provider, Turn
from actors.reply import Replier
from actors.store import Store
from actors.wire import message_json
from storage.errors import Fenced, NotFound
from storage.rows import Conversation

log = logging.getLogger(__name__)


class ConversationActor(Replier):
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
        super().__init__(
            conversation, store=store, provider=provider, hub=hub, config=config, observer=observer
        )
        self.current: Command | None = None
        self._on_idle = on_idle
        self._ready = False
        # With a cluster: the fencing number every write carries (actors/lease.py), fixed
        # for this actor's life; without a lease (Redis away) its writes are not fenced.
        self._leases = leases
        if leases is not None:
            self._fenced = {"fence": leases.fence(conversation.id) or UNFENCED}

    @property
    def busy(self) -> bool:
        """Loading its history, or handling a command: not to be retired for the cap."""
        return not self._ready or self.current is not None

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
        draft = Draft(uuid.uuid4(), [], {})
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
