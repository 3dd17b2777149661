"""The actor runtime, driven directly: ordering, cancel, crash, idle, cap, shutdown."""

from __future__ import annotations

import json
import uuid
from dataclasses import replace
from typing import Any

import anyio
import pytest

from actors.config import ActorConfig
from actors.errors import ActorCrashed, ActorUnavailable, ConversationGone
from actors.hub import Hub, HubLimits, Subscription
from actors.registry import Registry
from actors.store import DatabaseStore
from tests.actors.conftest import World, running_registry
from tests.actors.memory_store import MemoryStore
from tests.actors.scripted import ScriptedProvider

pytestmark = pytest.mark.anyio


async def collect(subscription: Subscription, count: int) -> list[dict[str, Any]]:
    events = []
    with anyio.fail_after(5):
        while len(events) < count:
            event = await subscription.receive()
            assert event is not None
            events.append(json.loads(event.data))
    return events


async def test_a_message_is_answered_and_stored(world: World) -> None:
    provider = ScriptedProvider()
    cid = await world.new_conversation()
    async with running_registry(world, provider) as registry:
        with registry.hub.subscribe(cid) as events:
            command = await registry.post_message(world.user_id, cid, "hello there")
            with anyio.fail_after(5):
                accepted = await command.accepted.wait()
                reply = await command.finished.wait()
            assert accepted.message.content == "hello there"
            assert reply.id == accepted.reply_id
            assert reply.content == "echo: hello there "
            assert reply.status == "complete"
            assert reply.model_used == "scripted"
            received = await collect(events, 6)
    types = [e["type"] for e in received]
    assert types == ["message", "chunk", "chunk", "chunk", "complete", "conversation_updated"]
    assert [e["seq"] for e in received] == list(range(1, len(received) + 1))
    assert received[-1]["conversation"]["title"] == "hello there"
    history = await world.store.load_history(world.user_id, cid, 10)
    assert [(m.role, m.status) for m in history] == [
        ("user", "complete"),
        ("assistant", "complete"),
    ]


async def test_concurrent_commands_are_answered_one_at_a_time_in_order(world: World) -> None:
    provider = ScriptedProvider()
    cid = await world.new_conversation()
    async with running_registry(world, provider) as registry:
        with registry.hub.subscribe(cid) as events:
            commands = [
                await registry.post_message(world.user_id, cid, f"question {i}") for i in range(5)
            ]
            with anyio.fail_after(5):
                replies = [await c.finished.wait() for c in commands]
            received = await collect(events, 5 * 6)
    assert provider.max_active == 1
    assert [r.content for r in replies] == [f"echo: question {i} " for i in range(5)]
    # Each reply's events sit together, between its question and the next one.
    owners = [e.get("message_id") or e.get("message", {}).get("id") for e in received]
    reply_ids = [str(r.id) for r in replies]
    chunk_owners = [o for o, e in zip(owners, received, strict=True) if e["type"] == "chunk"]
    assert chunk_owners == [rid for rid in reply_ids for _ in range(3)]
    questions = [e["message"]["content"] for e in received if e["type"] == "message"]
    assert questions == [f"question {i}" for i in range(5)]
    history = await world.store.load_history(world.user_id, cid, 20)
    assert [m.seq for m in history] == list(range(1, 11))
    assert [m.role for m in history] == ["user", "assistant"] * 5


async def test_cancel_keeps_the_partial_reply(world: World) -> None:
    provider = ScriptedProvider()
    cid = await world.new_conversation()
    async with running_registry(world, provider) as registry:
        with registry.hub.subscribe(cid) as events:
            command = await registry.post_message(world.user_id, cid, "please pause here")
            with anyio.fail_after(5):
                await provider.paused.wait()
            assert registry.cancel_reply(cid)
            with anyio.fail_after(5):
                reply = await command.finished.wait()
            received = await collect(events, 5)
        assert reply.status == "cancelled"
        assert reply.content == "echo: please "
        assert [e["type"] for e in received] == [
            "message",
            "chunk",
            "chunk",
            "cancelled",
            "conversation_updated",
        ]
        assert received[3]["message"]["content"] == "echo: please "
        # The conversation goes on.
        again = await registry.post_message(world.user_id, cid, "next")
        with anyio.fail_after(5):
            assert (await again.finished.wait()).status == "complete"
    assert not registry.cancel_reply(cid)


async def test_a_provider_error_fails_the_reply_and_the_actor_goes_on(world: World) -> None:
    provider = ScriptedProvider()
    cid = await world.new_conversation()
    async with running_registry(world, provider) as registry:
        with registry.hub.subscribe(cid) as events:
            command = await registry.post_message(world.user_id, cid, "this will fail")
            with anyio.fail_after(5):
                reply = await command.finished.wait()
            received = await collect(events, 4)
        assert (reply.status, reply.content) == ("failed", "echo: ")
        error = received[2]
        assert error["type"] == "error"
        assert (error["code"], error["error"]) == ("upstream_500", "model unavailable")
        ok = await registry.post_message(world.user_id, cid, "fine now")
        with anyio.fail_after(5):
            assert (await ok.finished.wait()).status == "complete"


async def test_a_crash_restarts_the_actor(world: World) -> None:
    provider = ScriptedProvider()
    cid = await world.new_conversation()
    async with running_registry(world, provider) as registry:
        crashing = await registry.post_message(world.user_id, cid, "crash please")
        queued = await registry.post_message(world.user_id, cid, "queued behind it")
        with anyio.fail_after(5), pytest.raises(ActorCrashed):
            await crashing.finished.wait()
        with anyio.fail_after(5):
            assert (await queued.finished.wait()).status == "complete"
        after = await registry.post_message(world.user_id, cid, "and after")
        with anyio.fail_after(5):
            assert (await after.finished.wait()).content == "echo: and after "
    history = await world.store.load_history(world.user_id, cid, 20)
    # Nothing generated is lost: the crashed reply is stored as failed with its partial text.
    assert [(m.role, m.status, m.content) for m in history[:2]] == [
        ("user", "complete", "crash please"),
        ("assistant", "failed", "echo: "),
    ]
    assert [m.seq for m in history] == list(range(1, 7))


async def test_idle_actors_stop_and_come_back(world: World) -> None:
    provider = ScriptedProvider()
    cid = await world.new_conversation()
    hub = Hub(HubLimits())
    async with running_registry(world, provider, hub=hub, idle_s=0.05) as registry:
        first = await registry.post_message(world.user_id, cid, "one")
        with anyio.fail_after(5):
            await first.finished.wait()
            await registry.wait_stopped()
        assert registry.live == 0
        head = hub.head(cid)
        assert head is not None
        with hub.subscribe(cid, since=head) as events:
            second = await registry.post_message(world.user_id, cid, "two")
            with anyio.fail_after(5):
                await second.finished.wait()
            received = await collect(events, 1)
        # The numbering goes on across the restart, in the same epoch.
        assert (received[0]["epoch"], received[0]["seq"]) == (head.epoch, head.seq + 1)
        assert len(provider.requests[-1].history) == 3  # the restarted actor loaded the history


async def test_live_actor_cap_stops_the_least_recently_used(world: World) -> None:
    provider = ScriptedProvider()
    ids = [await world.new_conversation() for _ in range(3)]
    async with running_registry(world, provider, max_live=2) as registry:
        for cid in ids:
            command = await registry.post_message(world.user_id, cid, "hi")
            with anyio.fail_after(5):
                await command.finished.wait()
        assert registry.live == 2
        assert not registry.cancel_reply(ids[0])
        # The stopped one comes back on its next command.
        again = await registry.post_message(world.user_id, ids[0], "back")
        with anyio.fail_after(5):
            assert (await again.finished.wait()).status == "complete"
        assert registry.live == 2


async def test_shutdown_stores_partial_replies(world: World) -> None:
    provider = ScriptedProvider()
    cid = await world.new_conversation()
    async with anyio.create_task_group() as outer:
        registry = Registry(
            store=world.store, provider=provider, hub=Hub(HubLimits()), config=ActorConfig()
        )
        await outer.start(registry.run)
        command = await registry.post_message(world.user_id, cid, "pause during shutdown")
        with anyio.fail_after(5):
            await provider.paused.wait()
        # The grace period runs out while the reply is still paused.
        with anyio.move_on_after(0.05):
            await registry.drain()
        registry.cancel()
    with pytest.raises(ActorUnavailable):
        await command.finished.wait()
    history = await world.store.load_history(world.user_id, cid, 10)
    assert [(m.role, m.status, m.content) for m in history] == [
        ("user", "complete", "pause during shutdown"),
        ("assistant", "cancelled", "echo: pause "),
    ]


async def test_shutdown_lets_running_replies_finish(world: World) -> None:
    provider = ScriptedProvider()
    cid = await world.new_conversation()
    async with running_registry(world, provider) as registry:
        command = await registry.post_message(world.user_id, cid, "pause a moment")
        with anyio.fail_after(5):
            await provider.paused.wait()
        async with anyio.create_task_group() as tg:
            tg.start_soon(registry.drain)
            provider.release.set()
        with anyio.fail_after(5):
            assert (await command.finished.wait()).status == "complete"
        with pytest.raises(ActorUnavailable):
            await registry.post_message(world.user_id, cid, "too late")


async def test_another_users_conversation_is_refused(world: World) -> None:
    provider = ScriptedProvider()
    cid = await world.new_conversation()
    async with running_registry(world, provider) as registry:
        with pytest.raises(ConversationGone):
            await registry.post_message(uuid.uuid4(), cid, "let me in")
        with pytest.raises(ConversationGone):
            await registry.post_message(world.user_id, uuid.uuid4(), "nothing here")
        live = await registry.post_message(world.user_id, cid, "mine")
        with anyio.fail_after(5):
            await live.finished.wait()
        with pytest.raises(ConversationGone):
            await registry.post_message(uuid.uuid4(), cid, "still not yours")
        with pytest.raises(ConversationGone):
            await registry.check_owner(uuid.uuid4(), cid)


async def test_idempotent_retry_returns_the_first_answer(world: World) -> None:
    provider = ScriptedProvider()
    cid = await world.new_conversation()
    async with running_registry(world, provider) as registry:
        first = await registry.post_message(world.user_id, cid, "once", "key-1")
        second = await registry.post_message(world.user_id, cid, "once", "key-1")
        with anyio.fail_after(5):
            a, b = await first.finished.wait(), await second.finished.wait()
            assert (await second.accepted.wait()).duplicate
        assert a == b
    assert len(await world.store.load_history(world.user_id, cid, 10)) == 2


async def test_a_conversation_deleted_mid_reply_stops_its_actor_cleanly(world: World) -> None:
    provider = ScriptedProvider()
    cid = await world.new_conversation()
    async with running_registry(world, provider) as registry:
        command = await registry.post_message(world.user_id, cid, "pause, then vanish")
        with anyio.fail_after(5):
            await provider.paused.wait()
        # What the delete route does: soft-delete in storage, then discard the actor.
        if isinstance(world.store, MemoryStore):
            found = world.store.conversations[cid]
            world.store.conversations[cid] = replace(found, deleted_at=found.updated_at)
        else:
            from storage.conversations import soft_delete_conversation

            assert isinstance(world.store, DatabaseStore)
            await soft_delete_conversation(world.store.db, world.user_id, cid)
        registry.discard(cid, world.user_id)
        with anyio.fail_after(5), pytest.raises(ConversationGone):
            await command.finished.wait()
        with anyio.fail_after(5):
            await registry.wait_stopped()
        with pytest.raises(ConversationGone):
            await registry.post_message(world.user_id, cid, "anyone there?")
