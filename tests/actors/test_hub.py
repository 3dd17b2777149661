"""The hub: fan-out, replay from a position, slow subscribers, bounded retention."""

from __future__ import annotations

import json
import uuid

import anyio
import pytest

from actors.events import Position
from actors.hub import Hub, HubLimits

pytestmark = pytest.mark.anyio
USER = uuid.uuid4()


def publish(hub: Hub, cid: uuid.UUID, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        hub.publish(cid, USER, "chunk", {"message_id": "m", "content": f"t{i}"})


async def drain(seqs: list[int], hub: Hub, cid: uuid.UUID, since: Position | None) -> None:
    with hub.subscribe(cid, since) as subscription:
        hub.close()
        while (event := await subscription.receive()) is not None:
            seqs.append(event.seq)


async def test_slow_subscriber_is_cut_off_and_fast_one_gets_everything() -> None:
    hub = Hub(HubLimits(queue_size=5))
    cid = uuid.uuid4()
    slow = hub.subscribe(cid)
    fast = hub.subscribe(cid)
    received: list[int] = []

    async def read_fast() -> None:
        while (event := await fast.receive()) is not None:
            received.append(event.seq)

    async with anyio.create_task_group() as tg:
        tg.start_soon(read_fast)
        for i in range(20):
            publish(hub, cid, 1, i)
            await anyio.lowlevel.checkpoint()  # the fast reader keeps up
        fast.end()
    assert received == list(range(1, 21))
    assert slow.cut_off == "too_slow"
    # What it had, in order, then the end; nothing from the middle is missing.
    kept = []
    while (event := await slow.receive()) is not None:
        kept.append(event.seq)
    assert kept == [1, 2, 3, 4, 5]
    slow.close()
    fast.close()


async def test_replay_from_a_position_has_no_gap_and_no_duplicate() -> None:
    hub = Hub()
    cid = uuid.uuid4()
    publish(hub, cid, 10)
    head = hub.head(cid)
    assert head is not None and head.seq == 10
    with hub.subscribe(cid, Position(head.epoch, 4)) as subscription:
        publish(hub, cid, 2, 10)
        seqs = []
        for _ in range(8):
            event = await subscription.receive()
            assert event is not None
            seqs.append(event.seq)
    assert seqs == list(range(5, 13))


async def test_unknown_or_expired_positions_get_reset_first() -> None:
    hub = Hub(HubLimits(retained=5))
    cid = uuid.uuid4()
    publish(hub, cid, 10)
    epoch = hub.head(cid).epoch  # type: ignore[union-attr]
    for since in [Position("other", 3), Position(epoch, 2), Position(epoch, 99)]:
        with hub.subscribe(cid, since) as subscription:
            assert subscription.reset_first == "unknown_position"
    # The oldest retained is 6: resuming from 5 is still exact.
    with hub.subscribe(cid, Position(epoch, 5)) as subscription:
        assert subscription.reset_first is None
        first = await subscription.receive()
        assert first is not None and first.seq == 6


async def test_sse_frames_are_encoded_once_and_shared() -> None:
    hub = Hub()
    cid = uuid.uuid4()
    a, b = hub.subscribe(cid), hub.subscribe(cid)
    event = hub.publish(cid, USER, "chunk", {"message_id": "m", "content": "hi"})
    got_a, got_b = await a.receive(), await b.receive()
    assert got_a is got_b is event
    assert event.sse is event.sse
    assert event.sse == b"id: %s:1\ndata: %s\n\n" % (event.epoch.encode(), event.data)
    body = json.loads(event.data)
    assert body == {
        "type": "chunk",
        "conversation_id": str(cid),
        "epoch": event.epoch,
        "seq": 1,
        "message_id": "m",
        "content": "hi",
    }
    a.close()
    b.close()


async def test_retained_bytes_stay_under_the_budget() -> None:
    hub = Hub(HubLimits(retained_bytes=20_000))
    for _ in range(200):
        publish(hub, uuid.uuid4(), 10)
    assert hub.retained_bytes <= 20_000
    # A quiet conversation whose history was dropped starts a new epoch.
    cid = uuid.uuid4()
    publish(hub, cid, 1)
    old = hub.head(cid)
    for _ in range(200):
        publish(hub, uuid.uuid4(), 10)
    publish(hub, cid, 1)
    new = hub.head(cid)
    assert old is not None and new is not None
    assert new.epoch != old.epoch and new.seq == 1


async def test_user_subscribers_see_all_their_conversations_changes_not_their_tokens() -> None:
    hub = Hub()
    mine = hub.subscribe_user(USER)
    other = hub.subscribe_user(uuid.uuid4())
    one, two = uuid.uuid4(), uuid.uuid4()
    publish(hub, one, 1)
    hub.publish(one, USER, "message", {"message": {"id": "m1"}})
    hub.publish(two, USER, "conversation_updated", {"conversation": {"id": str(two)}})
    got = [await mine.receive(), await mine.receive()]
    assert [(e.conversation_id, e.type) for e in got if e] == [
        (one, "message"),
        (two, "conversation_updated"),
    ]
    assert mine.queued(10) == []
    hub.close()
    assert await other.receive() is None
    mine.close()
    other.close()


async def test_close_ends_streams_and_refuses_new_ones() -> None:
    hub = Hub()
    cid = uuid.uuid4()
    publish(hub, cid, 2)
    seqs: list[int] = []
    with anyio.fail_after(5):
        await drain(seqs, hub, cid, Position(hub.head(cid).epoch, 0))  # type: ignore[union-attr]
    assert seqs == [1, 2]
    late = hub.subscribe(cid)
    assert await late.receive() is None
    late.close()


async def test_quiet_subscribers_get_a_keep_alive_mark() -> None:
    from actors.events import KEEP_ALIVE

    hub = Hub()
    quiet, busy = uuid.uuid4(), uuid.uuid4()
    with hub.subscribe(quiet) as still, hub.subscribe(busy) as active:
        publish(hub, busy, 1)
        hub.keep_alive(quiet_s=0)
        assert await still.receive() is KEEP_ALIVE
        first = await active.receive()
        assert first is not None and first.type == "chunk"
        hub.keep_alive(quiet_s=3600)
        assert still.queued(10) == []


async def test_a_quiet_watched_conversation_does_not_make_publishing_scan_everything() -> None:
    hub = Hub(HubLimits(retained_s=0.0))
    watched = uuid.uuid4()
    with hub.subscribe(watched) as subscription:
        publish(hub, watched, 1)
        publish(hub, uuid.uuid4(), 1)
        # Its events aged out, but its numbering stays while it is watched.
        publish(hub, watched, 1)
        events = subscription.queued(10)
    assert [e.seq for e in events] == [1, 2]
