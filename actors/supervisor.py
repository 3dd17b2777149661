"""`Supervisor`: hosts the conversation actors, supervises and retires them.

It keeps the live actors (least recently used first, under a cap), queues spawns for the task
that hosts them, retires idle ones, restarts a crashed one for the commands queued behind the
crash (at most `max_restarts` in `restart_window_s`), and on shutdown fails what no actor will
take. `Registry` (actors/registry.py) subclasses it with the lookup, the lease and forwarding.

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
from dataclasses import dataclass

import anyio
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from actors.actor import ConversationActor
from actors.cluster import Cluster
from actors.commands import Command
from actors.config import ActorConfig
from actors.errors import ActorCrashed, ActorUnavailable
from actors.hub import Hub
from actors.observer import Observer, RegistryStats, Unobserved
from actors.provider import Provider
from actors.store import Store
from storage.rows import Conversation

log = logging.getLogger(__name__)


@dataclass(eq=False)
class Entry:
    """A live actor and the two ends of its mailbox."""

    actor: ConversationActor
    inbox: MemoryObjectSendStream[Command]
    mailbox: MemoryObjectReceiveStream[Command]


class Supervisor:
    """Starts, supervises and retires the actors; `run` hosts them until closed."""

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
        self._live: OrderedDict[uuid.UUID, Entry] = OrderedDict()
        # Unbounded, so a spawn never waits: the live-actor cap bounds what can be queued.
        self._spawns: MemoryObjectSendStream[Entry]
        self._spawn_queue: MemoryObjectReceiveStream[Entry]
        self._spawns, self._spawn_queue = anyio.create_memory_object_stream[Entry](math.inf)
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

    def _refuse_if_closing(self) -> None:
        if self._closing:
            raise ActorUnavailable("the service is shutting down")

    def _spawn(self, conversation: Conversation) -> Entry:
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
        entry = Entry(actor, send, receive)
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

    def _evict_over_cap(self, *, keep: Entry) -> None:
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

    def _retire(self, entry: Entry) -> None:
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

    async def _supervise(self, entry: Entry) -> None:
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

    def _unstarted(self) -> list[Entry]:
        entries = []
        while True:
            try:
                entries.append(self._spawn_queue.receive_nowait())
            except (anyio.WouldBlock, anyio.EndOfStream, anyio.ClosedResourceError):
                return entries

    def _fail_queued(self, entry: Entry, error: Exception) -> None:
        """Fail the commands still in a mailbox whose actor will not take them."""
        for command in self._take_queued(entry):
            command.fail(error)
        entry.mailbox.close()

    @staticmethod
    def _take_queued(entry: Entry) -> list[Command]:
        queued: list[Command] = []
        while True:
            try:
                queued.append(entry.mailbox.receive_nowait())
            except (anyio.WouldBlock, anyio.EndOfStream, anyio.ClosedResourceError):
                return queued

    def _hand_over(self, conversation: Conversation, entry: Entry, error: Exception) -> None:
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
