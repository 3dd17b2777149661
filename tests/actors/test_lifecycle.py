"""The reply lifecycle: every reply ends with a terminal event, writes survive cancellation,
shutdown cannot miss its wake-up, and actors never run in a caller's context."""

from __future__ import annotations

import contextvars
import json
import uuid
from collections.abc import AsyncGenerator
from dataclasses import replace
from typing import Any

import anyio
import pytest

from actors.config import ActorConfig
from actors.errors import ActorCrashed, ActorUnavailable, StoreTimeout
from actors.hub import Hub, HubLimits, Subscription
from actors.provider import ReplyPart, ReplyRequest
from actors.registry import Registry
from actors.store import DatabaseStore, Store
from storage.rows import Conversation, Message
from tests.actors.conftest import World, running_registry
from tests.actors.memory_store import MemoryStore
from tests.actors.scripted import ScriptedProvider

pytestmark = pytest.mark.anyio


class GatedStore:
    """The world's real store, with gates a test opens: the assistant's insert, or a lookup,
    waits until the test says so (a database that is slow at the wrong moment), or fails."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.reply_entered = anyio.Event()
        self.reply_gate: anyio.Event | None = None
        self.reply_error: Exception | None = None
        # A loaded database: the assistant's insert takes this long.
        self.reply_delay_s = 0.0
        self.lookup_entered = anyio.Event()
        self.lookup_gate: anyio.Event | None = None

    async def load_conversation(
        self, user_id: uuid.UUID, conversation_id: uuid.UUID
    ) -> Conversation | None:
        if self.lookup_gate is not None:
            self.lookup_entered.set()
            await self.lookup_gate.wait()
        return await self.inner.load_conversation(user_id, conversation_id)

    async def load_history(
        self, user_id: uuid.UUID, conversation_id: uuid.UUID, limit: int
    ) -> list[Message]:
        return await self.inner.load_history(user_id, conversation_id, limit)

    async def insert_message(
        self, *, user_id: uuid.UUID, conversation_id: uuid.UUID, **fields: Any
    ) -> tuple[Message, bool]:
        if fields["role"] == "assistant":
            self.reply_entered.set()
            if self.reply_gate is not None:
                await self.reply_gate.wait()
            await anyio.sleep(self.reply_delay_s)
            if self.reply_error is not None:
                raise self.reply_error
        return await self.inner.insert_message(
            user_id=user_id, conversation_id=conversation_id, **fields
        )

    async def reply_after(
        self, user_id: uuid.UUID, conversation_id: uuid.UUID, seq: int
    ) -> Message | None:
        return await self.inner.reply_after(user_id, conversation_id, seq)

    async def auto_title(
        self, user_id: uuid.UUID, conversation_id: uuid.UUID, title: str
    ) -> Conversation | None:
        return await self.inner.auto_title(user_id, conversation_id, title)


async def next_of(subscription: Subscription, *types: str) -> dict[str, Any]:
    """The next event of one of `types`, skipping others."""
    with anyio.fail_after(5):
        while True:
            event = await subscription.receive()
            assert event is not None, "the stream ended"
            body: dict[str, Any] = json.loads(event.data)
            if body["type"] in types:
                return body


async def soft_delete(world: World, cid: uuid.UUID) -> None:
    """What the delete route does to storage."""
    if isinstance(world.store, MemoryStore):
        found = world.store.conversations[cid]
        world.store.conversations[cid] = replace(found, deleted_at=found.updated_at)
        return
    from storage.conversations import soft_delete_conversation

    assert isinstance(world.store, DatabaseStore)
    await soft_delete_conversation(world.store.db, world.user_id, cid)


async def test_a_reply_of_a_conversation_deleted_mid_reply_ends_with_an_event(
    world: World,
) -> None:
    provider = ScriptedProvider()
    cid = await world.new_conversation()
    async with running_registry(world, provider) as registry:
        with registry.hub.subscribe(cid) as events:
            command = await registry.post_message(world.user_id, cid, "pause, then vanish")
            reply_id = str((await command.accepted.wait()).reply_id)
            with anyio.fail_after(5):
                await provider.paused.wait()
            await soft_delete(world, cid)
            registry.discard(cid, world.user_id)
            ended = await next_of(events, "complete", "cancelled", "error")
    assert ended["message_id"] == reply_id
    assert (ended["type"], ended["code"]) == ("cancelled", "conversation_deleted")


async def test_a_reply_that_cannot_be_stored_ends_with_an_event(world: World) -> None:
    provider = ScriptedProvider()
    cid = await world.new_conversation()
    store = GatedStore(world.store)
    store.reply_error = RuntimeError("disk I/O error")
    gated = World(store, world.user_id, world.new_conversation)
    async with running_registry(gated, provider) as registry:
        with registry.hub.subscribe(cid) as events:
            command = await registry.post_message(world.user_id, cid, "hello")
            reply_id = str((await command.accepted.wait()).reply_id)
            ended = await next_of(events, "complete", "cancelled", "error")
            with anyio.fail_after(5), pytest.raises(ActorCrashed):
                await command.finished.wait()
            assert ended["message_id"] == reply_id
            assert (ended["type"], ended["code"]) == ("error", "store_failed")
            # The database is back: the restarted actor answers the next message.
            store.reply_error = None
            again = await registry.post_message(world.user_id, cid, "again")
            with anyio.fail_after(5):
                assert (await again.finished.wait()).status == "complete"


async def test_a_reply_generated_before_shutdown_is_stored_whole(world: World) -> None:
    provider = ScriptedProvider()
    cid = await world.new_conversation()
    store = GatedStore(world.store)
    store.reply_gate = anyio.Event()
    async with anyio.create_task_group() as tg:
        registry = Registry(
            store=store, provider=provider, hub=Hub(HubLimits()), config=ActorConfig()
        )
        await tg.start(registry.run)
        command = await registry.post_message(world.user_id, cid, "all of it")
        with anyio.fail_after(5):
            await store.reply_entered.wait()
        # Shutdown past its grace cancels the actor while its reply is being written.
        registry.cancel()
        store.reply_gate.set()
        with anyio.fail_after(5):
            await registry.stopped.wait()
    # The caller gets the reply, as stored.
    assert (await command.finished.wait()).status == "complete"
    history = await world.store.load_history(world.user_id, cid, 10)
    assert [(m.role, m.status, m.content) for m in history] == [
        ("user", "complete", "all of it"),
        ("assistant", "complete", "echo: all of it "),
    ]


async def test_a_stuck_write_is_abandoned_after_its_deadline(world: World) -> None:
    provider = ScriptedProvider()
    cid = await world.new_conversation()
    store = GatedStore(world.store)
    store.reply_gate = anyio.Event()  # never opened
    async with anyio.create_task_group() as tg:
        registry = Registry(
            store=store,
            provider=provider,
            hub=Hub(HubLimits()),
            config=ActorConfig(store_deadline_s=0.2),
        )
        await tg.start(registry.run)
        with registry.hub.subscribe(cid) as events:
            await registry.post_message(world.user_id, cid, "into the void")
            with anyio.fail_after(5):
                await store.reply_entered.wait()
            registry.cancel()
            with anyio.fail_after(5):
                await registry.stopped.wait()
            ended = await next_of(events, "complete", "cancelled", "error")
    assert (ended["type"], ended["code"]) == ("error", "store_failed")


async def test_a_slow_database_delays_a_reply_but_does_not_lose_it(world: World) -> None:
    provider = ScriptedProvider()
    cid = await world.new_conversation()
    store = GatedStore(world.store)
    # Slower than the shutdown's store deadline: outside shutdown that must not matter (at
    # 500 streams on PostgreSQL, writes queued for seconds and replies were lost).
    store.reply_delay_s = 0.3
    gated = World(store, world.user_id, world.new_conversation)
    async with running_registry(gated, provider, store_deadline_s=0.05) as registry:
        command = await registry.post_message(world.user_id, cid, "patience")
        with anyio.fail_after(5):
            assert (await command.finished.wait()).status == "complete"


async def test_a_new_conversation_at_the_cap_with_every_actor_busy_is_served(
    world: World,
) -> None:
    provider = ScriptedProvider()
    first, second = await world.new_conversation(), await world.new_conversation()
    async with running_registry(world, provider, max_live=1) as registry:
        busy = await registry.post_message(world.user_id, first, "pause here")
        with anyio.fail_after(5):
            await provider.paused.wait()
        # The one live actor is busy: the new conversation's actor goes over the cap (it was
        # evicting itself, and the caller got a KeyError).
        other = await registry.post_message(world.user_id, second, "hello")
        provider.release.set()
        with anyio.fail_after(5):
            assert (await other.finished.wait()).status == "complete"
            assert (await busy.finished.wait()).status == "complete"


async def test_a_reply_store_that_times_out_fails_the_command_not_the_actor(
    world: World,
) -> None:
    provider = ScriptedProvider()
    cid = await world.new_conversation()
    store = GatedStore(world.store)
    store.reply_gate = anyio.Event()  # the database never answers this write
    gated = World(store, world.user_id, world.new_conversation)
    async with running_registry(gated, provider, write_timeout_s=0.2) as registry:
        with registry.hub.subscribe(cid) as events:
            stuck = await registry.post_message(world.user_id, cid, "hello")
            with anyio.fail_after(5), pytest.raises(StoreTimeout):
                await stuck.finished.wait()
            ended = await next_of(events, "complete", "cancelled", "error")
            assert (ended["type"], ended["code"]) == ("error", "store_failed")
        # The database is back; the same actor answers, and nothing counted as a crash.
        store.reply_gate.set()
        again = await registry.post_message(world.user_id, cid, "again")
        with anyio.fail_after(5):
            assert (await again.finished.wait()).status == "complete"
        assert not registry._crashes


async def test_no_actor_starts_once_shutdown_began(world: World) -> None:
    provider = ScriptedProvider()
    cid = await world.new_conversation()
    store = GatedStore(world.store)
    store.lookup_gate = anyio.Event()
    gated = World(store, world.user_id, world.new_conversation)
    async with running_registry(gated, provider) as registry:
        outcome: list[BaseException | None] = []

        async def post() -> None:
            try:
                await registry.post_message(world.user_id, cid, "late")
                outcome.append(None)
            except ActorUnavailable as refused:
                outcome.append(refused)

        async with anyio.create_task_group() as tg:
            tg.start_soon(post)
            with anyio.fail_after(5):
                await store.lookup_entered.wait()
            # Shutdown begins while the caller is looking the conversation up.
            registry.close()
            store.lookup_gate.set()
        with anyio.fail_after(5):
            await registry.drain()
        assert isinstance(outcome[0], ActorUnavailable)
        assert registry.live == 0


async def test_wait_stopped_wakes_after_actors_started_while_waiting(world: World) -> None:
    provider = ScriptedProvider()
    first, second = await world.new_conversation(), await world.new_conversation()
    async with running_registry(world, provider, idle_s=0.1) as registry:
        one = await registry.post_message(world.user_id, first, "one")
        with anyio.fail_after(5):
            await one.finished.wait()
        async with anyio.create_task_group() as tg:
            woke = anyio.Event()

            async def wait() -> None:
                await registry.wait_stopped()
                woke.set()

            tg.start_soon(wait)
            await anyio.wait_all_tasks_blocked()
            # Another actor starts while someone waits for all of them to stop.
            two = await registry.post_message(world.user_id, second, "two")
            with anyio.fail_after(5):
                await two.finished.wait()
                await woke.wait()
        assert registry.live == 0


MARK: contextvars.ContextVar[str] = contextvars.ContextVar("mark", default="none")


class ContextProvider(ScriptedProvider):
    """Records the context variable each reply runs with."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []

    async def stream(self, request: ReplyRequest) -> AsyncGenerator[ReplyPart, None]:
        self.seen.append(MARK.get())
        async for part in super().stream(request):
            yield part


async def test_actors_do_not_inherit_the_callers_context(world: World) -> None:
    provider = ContextProvider()
    cid = await world.new_conversation()
    async with running_registry(world, provider) as registry:

        async def request_handler() -> None:
            MARK.set("request 1")
            command = await registry.post_message(world.user_id, cid, "hi")
            with anyio.fail_after(5):
                await command.finished.wait()

        async with anyio.create_task_group() as tg:
            tg.start_soon(request_handler)
    assert provider.seen == ["none"]
