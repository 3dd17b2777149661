"""The registry: spawns one actor per live conversation, supervises and retires them.

It owns no task group of its own: the composition root passes the one the actors live in,
and ends it after `drain` (STYLE habit: pass the task group to the spawner).
"""

from __future__ import annotations

import logging
import uuid
from collections import OrderedDict, deque
from dataclasses import dataclass, replace

import anyio
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from actors.actor import ActorConfig, ConversationActor
from actors.commands import Command, PostMessage
from actors.errors import ActorCrashed, ActorUnavailable, ConversationGone
from actors.hub import Hub
from actors.provider import Provider
from actors.store import Store
from storage.rows import Conversation

log = logging.getLogger(__name__)


@dataclass(eq=False)
class _Entry:
    actor: ConversationActor
    inbox: MemoryObjectSendStream[Command]


class Registry:
    """Finds or starts the actor of a conversation and delivers commands to it."""

    def __init__(
        self,
        *,
        store: Store,
        provider: Provider,
        hub: Hub,
        config: ActorConfig,
        task_group: TaskGroup,
    ) -> None:
        self.store = store
        self.hub = hub
        self.config = config
        self._provider = provider
        self._task_group = task_group
        # Least recently used first, for the live-actor cap.
        self._live: OrderedDict[uuid.UUID, _Entry] = OrderedDict()
        self._running = 0
        self._all_stopped = anyio.Event()
        self._all_stopped.set()
        self._closing = False
        # When each conversation's actor last crashed, within the restart window.
        self._crashes: dict[uuid.UUID, deque[float]] = {}

    @property
    def live(self) -> int:
        return len(self._live)

    async def post_message(
        self,
        user_id: uuid.UUID,
        conversation_id: uuid.UUID,
        content: str,
        idempotency_key: str | None = None,
        *,
        paced: bool = True,
    ) -> PostMessage:
        """Hand a message to the conversation's actor; wait on the command's outcomes."""
        command = PostMessage(user_id, content, idempotency_key, paced)
        for _ in range(2):
            entry = await self._entry(user_id, conversation_id)
            try:
                await entry.inbox.send(command)
                return command
            except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                # It retired between lookup and delivery; the next lookup starts a new one.
                continue
        raise ActorUnavailable("the conversation is restarting, try again")

    async def check_owner(self, user_id: uuid.UUID, conversation_id: uuid.UUID) -> None:
        """`ConversationGone` unless this is the user's live conversation."""
        entry = self._live.get(conversation_id)
        if entry is not None:
            if entry.actor.conversation.user_id != user_id:
                raise ConversationGone()
            return
        if await self.store.load_conversation(user_id, conversation_id) is None:
            raise ConversationGone()

    def update_conversation(self, conversation: Conversation) -> None:
        """The conversation was renamed elsewhere: the live actor's copy follows."""
        entry = self._live.get(conversation.id)
        if entry is not None:
            entry.actor.conversation = replace(
                conversation, total_messages=entry.actor.conversation.total_messages
            )

    def cancel_reply(self, conversation_id: uuid.UUID) -> bool:
        entry = self._live.get(conversation_id)
        return entry is not None and entry.actor.cancel_reply()

    def discard(self, conversation_id: uuid.UUID) -> None:
        """The conversation was deleted: stop its reply and retire its actor."""
        entry = self._live.get(conversation_id)
        if entry is not None:
            entry.actor.cancel_reply()
            self._retire(entry)

    async def wait_stopped(self) -> None:
        """Return once no actor is running."""
        await self._all_stopped.wait()

    async def drain(self) -> None:
        """Stop taking commands; return when every actor has finished what it was doing."""
        self._closing = True
        for entry in list(self._live.values()):
            self._retire(entry)
        await self._all_stopped.wait()

    async def _entry(self, user_id: uuid.UUID, conversation_id: uuid.UUID) -> _Entry:
        entry = self._live.get(conversation_id)
        if entry is None:
            if self._closing:
                raise ActorUnavailable("the service is shutting down")
            self._check_crashes(conversation_id)
            conversation = await self.store.load_conversation(user_id, conversation_id)
            if conversation is None:
                raise ConversationGone()
            # Another caller may have started it while we were loading.
            entry = self._live.get(conversation_id) or self._spawn(conversation)
        if entry.actor.conversation.user_id != user_id:
            raise ConversationGone()
        self._live.move_to_end(conversation_id)
        return entry

    def _spawn(self, conversation: Conversation) -> _Entry:
        send, receive = anyio.create_memory_object_stream[Command](self.config.mailbox_size)
        actor = ConversationActor(
            conversation,
            store=self.store,
            provider=self._provider,
            hub=self.hub,
            config=self.config,
            on_idle=self._on_idle,
        )
        entry = _Entry(actor, send)
        self._live[conversation.id] = entry
        self._running += 1
        self._all_stopped = anyio.Event()
        self._task_group.start_soon(
            self._supervise, entry, receive, name=f"actor {conversation.id}"
        )
        self._evict_over_cap()
        return entry

    def _evict_over_cap(self) -> None:
        excess = len(self._live) - self.config.max_live
        if excess <= 0:
            return
        for entry in list(self._live.values()):
            if excess <= 0:
                break
            if not entry.actor.busy:
                self._retire(entry)
                excess -= 1
        if excess > 0:
            log.warning(
                "%d live actors, all busy: over the cap of %d",
                len(self._live),
                self.config.max_live,
            )

    def _on_idle(self, actor: ConversationActor) -> None:
        entry = self._live.get(actor.id)
        if entry is not None and entry.actor is actor:
            self._retire(entry)

    def _retire(self, entry: _Entry) -> None:
        """Forget the actor and close its mailbox: it finishes what is queued, then ends."""
        if self._live.get(entry.actor.id) is entry:
            del self._live[entry.actor.id]
        entry.inbox.close()

    def _check_crashes(self, conversation_id: uuid.UUID) -> None:
        crashes = self._crashes.get(conversation_id)
        if crashes is None:
            return
        now = anyio.current_time()
        while crashes and now - crashes[0] > self.config.restart_window_s:
            crashes.popleft()
        if not crashes:
            del self._crashes[conversation_id]
        elif len(crashes) >= self.config.max_restarts:
            raise ActorUnavailable("this conversation keeps failing; try again later")

    async def _supervise(self, entry: _Entry, inbox: MemoryObjectReceiveStream[Command]) -> None:
        """Run one actor; on a crash fail its command, and restart it for the queued ones."""
        actor = entry.actor
        try:
            await actor.run(inbox)
        except Exception as error:
            log.exception("actor of conversation %s crashed", actor.id)
            self._crashes.setdefault(actor.id, deque()).append(anyio.current_time())
            if actor.current is not None:
                actor.current.fail(ActorCrashed("the assistant failed; please try again"))
            self._retire(entry)
            self._hand_over(actor.conversation, inbox, error)
        finally:
            if actor.current is not None:
                # Cancelled (shutdown past its grace): the caller must not wait forever.
                actor.current.fail(ActorUnavailable("the service is shutting down"))
            inbox.close()
            self._retire(entry)
            self._running -= 1
            if self._running == 0:
                self._all_stopped.set()

    def _hand_over(
        self,
        conversation: Conversation,
        inbox: MemoryObjectReceiveStream[Command],
        error: Exception,
    ) -> None:
        """Give the commands queued behind a crash to a fresh actor (or fail them)."""
        queued: list[Command] = []
        while True:
            try:
                queued.append(inbox.receive_nowait())
            except (anyio.WouldBlock, anyio.EndOfStream):
                break
        if not queued:
            return
        try:
            self._check_crashes(conversation.id)
            if self._closing:
                raise ActorUnavailable("the service is shutting down")
        except ActorUnavailable as refused:
            for command in queued:
                command.fail(refused)
            return
        entry = self._live.get(conversation.id) or self._spawn(conversation)
        for command in queued:
            try:
                entry.inbox.send_nowait(command)
            except (anyio.WouldBlock, anyio.ClosedResourceError, anyio.BrokenResourceError):
                command.fail(ActorUnavailable("the conversation is restarting, try again"))
