"""The registry: spawns one actor per live conversation, supervises and retires them.

The actors live in a task group that `run` holds, in the task that hosts them: callers (route
handlers) only queue a spawn, so no actor inherits a request's context variables, and every
actor has a parent whose lifetime is the registry's. `drain` waits for the end of that task
group itself, so no wake-up can be missed (Hypercorn waits on its nursery the same way).
"""

from __future__ import annotations

import logging
import math
import uuid
from collections import Counter, OrderedDict, deque
from dataclasses import dataclass, replace

import anyio
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from actors.actor import ActorConfig, ConversationActor
from actors.cluster import ATTEMPTS, Cluster, lost
from actors.commands import Command, PostMessage
from actors.errors import ActorCrashed, ActorUnavailable, ConversationGone
from actors.hub import Hub
from actors.lease import Elsewhere
from actors.observer import Observer, RegistryStats, Unobserved
from actors.provider import Provider
from actors.store import Store
from storage.rows import Conversation

log = logging.getLogger(__name__)


@dataclass(eq=False)
class _Entry:
    actor: ConversationActor
    inbox: MemoryObjectSendStream[Command]
    mailbox: MemoryObjectReceiveStream[Command]


class Registry:
    """Finds or starts the actor of a conversation and delivers commands to it.

    Lifecycle: `run` hosts the actors until `close` (or `drain`) and every actor has ended;
    `cancel` cuts running replies short (they store what they have, within their deadline).
    """

    def __init__(
        self,
        *,
        store: Store,
        provider: Provider,
        hub: Hub,
        config: ActorConfig,
        observer: Observer | None = None,
    ) -> None:
        self.store = store
        self.observer = observer or Unobserved()
        self.hub = hub
        self.config = config
        self._provider = provider
        # Least recently used first, for the live-actor cap.
        self._live: OrderedDict[uuid.UUID, _Entry] = OrderedDict()
        # Unbounded, so a spawn never waits: the live-actor cap bounds what can be queued.
        self._spawns: MemoryObjectSendStream[_Entry]
        self._spawn_queue: MemoryObjectReceiveStream[_Entry]
        self._spawns, self._spawn_queue = anyio.create_memory_object_stream[_Entry](math.inf)
        self._running = 0
        # Every actor whose task is running, live or retired (still finishing its mailbox).
        self._running_actors: set[ConversationActor] = set()
        # One event per waiter of `wait_stopped`, so none can be replaced under a waiter.
        self._stop_waiters: list[anyio.Event] = []
        self._scope: anyio.CancelScope | None = None
        self._closing = False
        self.stopped = anyio.Event()
        # When each conversation's actor last crashed, within the restart window.
        self._crashes: dict[uuid.UUID, deque[float]] = {}
        # With Redis: the cluster-wide lease per conversation and forwarding (`join`).
        self.cluster: Cluster | None = None
        # Actors running per conversation (a retired one may still finish its mailbox).
        self._running_per_conversation: Counter[uuid.UUID] = Counter()

    def join(self, cluster: Cluster) -> None:
        """Run one actor per conversation across the cluster: take the lease before spawning,
        forward commands for conversations whose lease another instance holds."""
        self.cluster = cluster
        cluster.attach(self)

    @property
    def live(self) -> int:
        return len(self._live)

    def stats(self) -> RegistryStats:
        """Live and running actors, commands waiting in mailboxes, replies being generated
        (O(actors): read when metrics are scraped, not on any request)."""
        return RegistryStats(
            live=len(self._live),
            running=len(self._running_actors),
            queued_commands=sum(
                e.mailbox.statistics().current_buffer_used for e in self._live.values()
            ),
            replying=sum(1 for actor in self._running_actors if actor.replying),
        )

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Host the actors; return once closed and every actor has ended."""
        try:
            async with anyio.create_task_group() as actors:
                self._scope = actors.cancel_scope
                task_status.started()
                async for entry in self._spawn_queue:
                    actors.start_soon(self._supervise, entry, name=f"actor {entry.actor.id}")
        finally:
            # Cancelled before they started: their callers must not wait forever.
            for entry in self._unstarted():
                self._fail_queued(entry, ActorUnavailable("the service is shutting down"))
                self._stopped_one()
            self._spawn_queue.close()
            self.stopped.set()

    def close(self) -> None:
        """Take no new commands; every actor finishes what it has queued, then ends."""
        self._closing = True
        self._spawns.close()
        for entry in list(self._live.values()):
            self._retire(entry)

    def cancel(self) -> None:
        """Stop the actors now (past the shutdown grace): replies store what they have."""
        self.close()
        for actor in self._running_actors:
            actor.stop_soon()
        if self._scope is not None:
            self._scope.cancel()
        else:
            self._spawn_queue.close()
            self.stopped.set()

    async def drain(self) -> None:
        """Close, and return when every actor has finished what it was doing."""
        self.close()
        await self.stopped.wait()

    async def wait_stopped(self) -> None:
        """Return once no actor is running (for tests and for operators' tools)."""
        if self._running:
            waiter = anyio.Event()
            self._stop_waiters.append(waiter)
            await waiter.wait()

    async def post_message(
        self,
        user_id: uuid.UUID,
        conversation_id: uuid.UUID,
        content: str,
        idempotency_key: str | None = None,
        *,
        paced: bool = True,
        origin: str | None = None,
        local: bool = False,
    ) -> PostMessage:
        """Hand a message to the conversation's actor; wait on the command's outcomes.

        With a cluster, a conversation whose lease another instance holds has its command
        forwarded there, unless `local` (a command forwarded here is never sent on)."""
        command = PostMessage(user_id, content, idempotency_key, paced, origin)
        for _ in range(ATTEMPTS):
            entry = await self._entry(user_id, conversation_id)
            if isinstance(entry, Elsewhere):
                assert self.cluster is not None
                if local:
                    raise ActorUnavailable("the conversation moved, try again")
                if await self.cluster.forwarding.post(entry.owner, conversation_id, command):
                    return command
                # Nobody listens there: the owner died. Its lease is free once it expires
                # (the caller bounds the whole wait).
                await anyio.sleep(min(entry.ttl_s, self.cluster.leases.lease_s) + 0.01)
                continue
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

    async def cancel_anywhere(self, user_id: uuid.UUID, conversation_id: uuid.UUID) -> bool:
        """Stop the conversation's reply here, or on the instance whose actor runs it."""
        if self.cancel_reply(conversation_id):
            return True
        if self.cluster is None or conversation_id in self._live:
            return False
        return await self.cluster.cancel_elsewhere(user_id, conversation_id)

    def lost(self, conversation_id: uuid.UUID, taken: bool) -> None:
        """The lease is gone: no new commands here. Taken by another instance, the reply
        stops too (its write would be fenced anyway)."""
        entry = self._live.get(conversation_id)
        if entry is not None:
            if taken:
                entry.actor.cancel_reply()
            self._retire(entry)

    def discard(self, conversation_id: uuid.UUID, user_id: uuid.UUID) -> bool:
        """The user's conversation was deleted: stop its reply and retire its actor here;
        whether a reply was running."""
        entry = self._live.get(conversation_id)
        if entry is None or entry.actor.conversation.user_id != user_id:
            return False
        running = entry.actor.cancel_reply()
        self._retire(entry)
        return running

    async def discard_anywhere(self, user_id: uuid.UUID, conversation_id: uuid.UUID) -> None:
        """`discard` here, or on the instance whose actor runs the conversation, so that a
        reply stops at once wherever it runs (not when it next tries to write)."""
        if conversation_id in self._live:
            self.discard(conversation_id, user_id)
        elif self.cluster is not None:
            await self.cluster.cancel_elsewhere(user_id, conversation_id, discard=True)

    async def _entry(self, user_id: uuid.UUID, conversation_id: uuid.UUID) -> _Entry | Elsewhere:
        entry = self._live.get(conversation_id)
        if entry is None:
            self._refuse_if_closing()
            self._check_crashes(conversation_id)
            conversation = await self.store.load_conversation(user_id, conversation_id)
            if conversation is None:
                raise ConversationGone()
            interrupted = None
            if self.cluster is not None and conversation_id not in self._live:
                taken = await self.cluster.leases.acquire(conversation_id)
                if isinstance(taken, Elsewhere):
                    return taken
                interrupted = taken.interrupted
            # Shutdown may have begun, or another caller started it, while we were loading.
            self._refuse_if_closing()
            entry = self._live.get(conversation_id) or self._spawn(conversation)
            if interrupted is not None:
                # Its owner died mid-reply: the reply was never stored; its watchers learn
                # that it ended.
                self.hub.publish(conversation_id, conversation.user_id, "error", lost(interrupted))
        if entry.actor.conversation.user_id != user_id:
            raise ConversationGone()
        if self._live.get(conversation_id) is entry:
            self._live.move_to_end(conversation_id)
        return entry

    def _refuse_if_closing(self) -> None:
        if self._closing:
            raise ActorUnavailable("the service is shutting down")

    def _spawn(self, conversation: Conversation) -> _Entry:
        """Queue a new actor for the hosting task to start; its mailbox takes commands now."""
        send, receive = anyio.create_memory_object_stream[Command](self.config.mailbox_size)
        leases = self.cluster.leases if self.cluster is not None else None
        actor = ConversationActor(
            conversation,
            store=self.store,
            provider=self._provider,
            hub=self.hub,
            config=self.config,
            on_idle=self._on_idle,
            leases=leases,
            observer=self.observer,
        )
        entry = _Entry(actor, send, receive)
        try:
            self._spawns.send_nowait(entry)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            send.close()
            receive.close()
            raise ActorUnavailable("the service is shutting down") from None
        self._live[conversation.id] = entry
        self._running += 1
        self._evict_over_cap(keep=entry)
        return entry

    def _evict_over_cap(self, *, keep: _Entry) -> None:
        """Retire the least recently used idle actors past the cap (never `keep`, the one
        just made for a caller); busy ones are left alone and the cap is exceeded."""
        excess = len(self._live) - self.config.max_live
        if excess <= 0:
            return
        for entry in list(self._live.values()):
            if excess <= 0:
                break
            # Idle: started, no command running and none queued. Retiring one that is still
            # loading or has queued commands would let a second actor start beside it.
            queued = entry.mailbox.statistics().current_buffer_used
            if entry is not keep and not entry.actor.busy and not queued:
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

    async def _supervise(self, entry: _Entry) -> None:
        """Run one actor; on a crash fail its command, and restart it for the queued ones."""
        actor = entry.actor
        self._running_actors.add(actor)
        self._running_per_conversation[actor.id] += 1
        try:
            await actor.run(entry.mailbox)
        except Exception as error:
            log.exception("actor of conversation %s crashed", actor.id)
            self.observer.actor_crashed()
            self._crashes.setdefault(actor.id, deque()).append(anyio.current_time())
            if actor.current is not None:
                actor.current.fail(ActorCrashed("the assistant failed; please try again"))
            self._retire(entry)
            self._hand_over(actor.conversation, entry, error)
        finally:
            if actor.current is not None:
                # Cancelled (shutdown past its grace): the caller must not wait forever.
                actor.current.fail(ActorUnavailable("the service is shutting down"))
            self._fail_queued(entry, ActorUnavailable("the service is shutting down"))
            self._retire(entry)
            self._running_actors.discard(actor)
            self._running_per_conversation[actor.id] -= 1
            if not self._running_per_conversation[actor.id]:
                del self._running_per_conversation[actor.id]
                # The conversation's last actor here ended: its lease goes (idle, shutdown).
                if self.cluster is not None and actor.id not in self._live:
                    self.cluster.leases.release_soon(actor.id)
            self._stopped_one()

    def _stopped_one(self) -> None:
        self._running -= 1
        if self._running == 0:
            waiters, self._stop_waiters = self._stop_waiters, []
            for waiter in waiters:
                waiter.set()

    def _unstarted(self) -> list[_Entry]:
        entries = []
        while True:
            try:
                entries.append(self._spawn_queue.receive_nowait())
            except (anyio.WouldBlock, anyio.EndOfStream, anyio.ClosedResourceError):
                return entries

    def _fail_queued(self, entry: _Entry, error: Exception) -> None:
        """Fail the commands still in a mailbox whose actor will not take them."""
        for command in self._take_queued(entry):
            command.fail(error)
        entry.mailbox.close()

    @staticmethod
    def _take_queued(entry: _Entry) -> list[Command]:
        queued: list[Command] = []
        while True:
            try:
                queued.append(entry.mailbox.receive_nowait())
            except (anyio.WouldBlock, anyio.EndOfStream, anyio.ClosedResourceError):
                return queued

    def _hand_over(self, conversation: Conversation, entry: _Entry, error: Exception) -> None:
        """Give the commands queued behind a crash to a fresh actor (or fail them)."""
        queued = self._take_queued(entry)
        if not queued:
            return
        try:
            self._check_crashes(conversation.id)
            self._refuse_if_closing()
            successor = self._live.get(conversation.id) or self._spawn(conversation)
        except ActorUnavailable as refused:
            for command in queued:
                command.fail(refused)
            return
        for command in queued:
            try:
                successor.inbox.send_nowait(command)
            except (anyio.WouldBlock, anyio.ClosedResourceError, anyio.BrokenResourceError):
                command.fail(ActorUnavailable("the conversation is restarting, try again"))
