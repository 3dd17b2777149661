"""Chatting over `/ws/chat` against a real server: one socket, several sockets of one user,
another user's socket, and the WebSocket beside SSE on the same conversation."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from httpx_sse import aconnect_sse

from tests.server import Server
from tests.ws.conftest import (
    BASE,
    QUESTION,
    Frame,
    Socket,
    check_numbering,
    is_event,
    open_socket,
    serving,
    sign_up,
    ws_env,
)

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module", name="server")
def fixture_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("ws-chat")
    with serving(ws_env(tmp, sse_keepalive_s="0.3"), tmp) as server:
        yield server


async def create(socket: Socket, title: str | None = None) -> str:
    fields = {} if title is None else {"title": title}
    conversation = await socket.ask("create_conversation", **fields)
    return str(conversation["id"])


async def send(
    socket: Socket, conversation_id: str, content: str = QUESTION, **fields: Any
) -> tuple[Frame, list[Frame]]:
    """`send_message`: its `message_response` and the frames before it."""
    answer, before = await socket.request(
        "send_message", conversation_id=conversation_id, content=content, **fields
    )
    assert answer["type"] == "message_response", answer
    return answer, before


async def stored(http: httpx.AsyncClient, headers: dict[str, str], cid: str) -> list[Frame]:
    response = await http.get(f"{BASE}/{cid}/messages", headers=headers)
    assert response.status_code == 200, response.text
    items: list[Frame] = response.json()["items"]
    return items


async def expect_nothing_pending(socket: Socket) -> None:
    """Nothing was queued for `socket`: a ping's answer is the very next frame."""
    before = len(socket.frames)
    await socket.ping()
    assert [f["type"] for f in socket.frames[before:]] == ["pong"], socket.frames[before:]


def through_complete(events: list[Frame]) -> list[Frame]:
    """Events up to and including the first `complete`."""
    end = next(i for i, e in enumerate(events) if e["type"] == "complete")
    return events[: end + 1]


def notifications(frames: list[Frame], event: str) -> list[Frame]:
    """The `conversation` of each `notification` of one kind."""
    return [
        f["data"]["conversation"]
        for f in frames
        if f["type"] == "notification"
        and f["notification_type"] == "conversation_update"
        and f["data"]["event"] == event
    ]


async def test_a_full_chat_over_one_socket(server: Server, http: httpx.AsyncClient) -> None:
    user = await sign_up(http)
    async with open_socket(server, user.token) as socket:
        answer, _ = await socket.request("create_conversation", title="Help")
        assert answer["type"] == "response" and answer["action"] == "create_conversation"
        conversation = answer["data"]
        assert conversation["title"] == "Help" and conversation["total_messages"] == 0
        cid = conversation["id"]

        reply, before = await send(socket, cid, client_message_id="first")
        events = [f for f in before if is_event(f, cid)]
        types = [e["type"] for e in events if e["type"] != "conversation_updated"]
        assert types[0] == "message" and types[-1] == "complete", types
        assert set(types[1:-1]) == {"chunk"}, types
        check_numbering(events)
        question = next(e for e in events if e["type"] == "message")["message"]
        complete = next(e for e in events if e["type"] == "complete")
        assert question["role"] == "user" and question["content"] == QUESTION
        chunks = "".join(e["content"] for e in events if e["type"] == "chunk")
        assert complete["message"]["content"] == chunks
        assert complete["message"]["status"] == "complete"
        assert reply["data"] == complete["message"]

        # What streamed is what is stored, over REST and over the socket.
        messages = await stored(http, user.headers, cid)
        assert messages == [question, complete["message"]]
        page = await socket.ask("get_messages", conversation_id=cid)
        assert page == (await http.get(f"{BASE}/{cid}/messages", headers=user.headers)).json()
        listed = await socket.ask("list_conversations")
        assert listed == (await http.get(BASE, headers=user.headers)).json()
        assert [c["id"] for c in listed["items"]] == [cid] and listed["total"] == 1

        # The client_message_id works as an Idempotency-Key: a retry stores nothing new.
        again, _ = await send(socket, cid, client_message_id="first")
        assert again["data"] == reply["data"]
        assert len(await stored(http, user.headers, cid)) == 2


async def test_answers_echo_the_request_id(server: Server, http: httpx.AsyncClient) -> None:
    user = await sign_up(http)
    async with open_socket(server, user.token) as socket:
        for request_id in ["a-string", 42]:
            await socket.send("ping", request_id=request_id)
            assert await socket.receive() == {"type": "pong", "request_id": request_id}
        await socket.send("list_conversations", request_id=7)
        answer = await socket.receive()
        assert (answer["type"], answer["request_id"]) == ("response", 7)


async def test_rename_and_delete_over_the_socket(server: Server, http: httpx.AsyncClient) -> None:
    user = await sign_up(http)
    async with open_socket(server, user.token) as socket:
        cid = await create(socket)
        renamed = await socket.ask("rename_conversation", conversation_id=cid, title="Renamed")
        assert renamed["id"] == cid and renamed["title"] == "Renamed"
        assert await socket.ask("delete_conversation", conversation_id=cid) is None
        assert (await http.get(f"{BASE}/{cid}/messages", headers=user.headers)).status_code == 404
        answer, _ = await socket.request("get_messages", conversation_id=cid)
        assert (answer["type"], answer["code"]) == ("error", "not_found")


async def test_a_second_socket_of_the_user_sees_everything(
    server: Server, http: httpx.AsyncClient
) -> None:
    user = await sign_up(http)
    async with open_socket(server, user.token) as first, open_socket(server, user.token) as second:
        cid = await create(first)
        created = await second.until(lambda f: f["type"] == "notification")
        assert [c["id"] for c in notifications(created, "conversation_updated")] == [cid]
        assert await second.ask("subscribe", conversation_id=cid) == {"conversation_id": cid}

        reply, before = await send(first, cid)
        sent = through_complete([e for e in before if is_event(e, cid)])
        seen = await second.until(
            lambda f: f["type"] == "complete" and f.get("conversation_id") == cid
        )
        news = [f for f in seen if f["type"] == "new_message"]
        question = next(e for e in sent if e["type"] == "message")["message"]
        assert news == [{"type": "new_message", "conversation_id": cid, "data": question}]
        assert [e for e in seen if is_event(e, cid)] == sent
        assert "message_response" not in [f["type"] for f in seen]
        assert reply["data"] == seen[-1]["message"]

        # The auto-title reaches both sockets as a notification.
        def titled(f: Frame) -> bool:
            return bool(
                f["type"] == "notification" and f["data"]["conversation"]["title"] == QUESTION
            )

        for socket in (first, second):
            if not any(titled(f) for f in socket.frames):
                await socket.until(titled)

        await first.ask("rename_conversation", conversation_id=cid, title="Renamed")
        await second.until(
            lambda f: (
                f["type"] == "notification" and f["data"]["conversation"]["title"] == "Renamed"
            )
        )
        await first.ask("delete_conversation", conversation_id=cid)
        got = await second.until(
            lambda f: f["type"] == "notification" and f["data"]["event"] == "conversation_deleted"
        )
        assert [c["id"] for c in notifications(got, "conversation_deleted")] == [cid]


async def test_typing_reaches_only_the_users_other_sockets(
    server: Server, http: httpx.AsyncClient
) -> None:
    user, stranger = await sign_up(http), await sign_up(http)
    async with (
        open_socket(server, user.token) as first,
        open_socket(server, user.token) as second,
        open_socket(server, stranger.token) as outsider,
    ):
        cid = await create(first)
        await second.until(lambda f: f["type"] == "notification")
        await first.send("typing", conversation_id=cid)
        assert await second.receive() == {"type": "typing", "conversation_id": cid}
        await expect_nothing_pending(first)
        await expect_nothing_pending(outsider)


async def test_a_message_sent_over_rest_reaches_the_socket_as_new_message(
    server: Server, http: httpx.AsyncClient
) -> None:
    user = await sign_up(http)
    async with open_socket(server, user.token) as socket:
        cid = await create(socket)
        posted = await http.post(
            f"{BASE}/{cid}/messages",
            json={"message": QUESTION},
            headers=user.headers | {"Prefer": "respond-async"},
        )
        assert posted.status_code == 202
        got = await socket.until(lambda f: f["type"] == "new_message")
        assert got[-1] == {"type": "new_message", "conversation_id": cid, "data": posted.json()}
        # The socket created the conversation, so it is subscribed and sees the reply.
        await socket.until(lambda f: f["type"] == "complete" and f.get("conversation_id") == cid)


async def test_another_users_socket_gets_nothing_and_not_found(
    server: Server, http: httpx.AsyncClient
) -> None:
    user, stranger = await sign_up(http), await sign_up(http)
    async with (
        open_socket(server, user.token) as mine,
        open_socket(server, stranger.token) as theirs,
    ):
        cid = await create(mine)
        attempts: list[tuple[str, dict[str, Any]]] = [
            ("subscribe", {"conversation_id": cid}),
            ("send_message", {"conversation_id": cid, "content": "let me in"}),
            ("cancel", {"conversation_id": cid}),
            ("rename_conversation", {"conversation_id": cid, "title": "Mine now"}),
            ("delete_conversation", {"conversation_id": cid}),
            ("get_messages", {"conversation_id": cid}),
        ]
        for type, fields in attempts:
            answer, before = await theirs.request(type, **fields)
            assert before == [], (type, before)
            assert answer["type"] == "error" and answer["code"] == "not_found", (type, answer)
            assert answer["request_id"] and isinstance(answer["error"], str)

        # The owner's conversation is untouched, and its whole life reaches no one else.
        await send(mine, cid)
        await mine.ask("rename_conversation", conversation_id=cid, title="Still mine")
        await mine.send("typing", conversation_id=cid)
        await mine.ask("delete_conversation", conversation_id=cid)
        await expect_nothing_pending(theirs)
        assert (await theirs.ask("list_conversations"))["total"] == 0


async def test_a_socket_beside_sse_gets_the_same_ids_and_bytes(
    server: Server, http: httpx.AsyncClient
) -> None:
    user = await sign_up(http)
    response = await http.post(BASE, json={}, headers=user.headers)
    cid = response.json()["id"]
    url = f"{BASE}/{cid}/events"
    async with (
        aconnect_sse(http, "GET", url, headers=user.headers) as source,
        open_socket(server, user.token) as socket,
    ):
        await socket.ask("subscribe", conversation_id=cid)
        await send(socket, cid)
        sse = []
        async for event in source.aiter_sse():
            sse.append((event.id, event.data))
            if json.loads(event.data)["type"] == "complete":
                break
    frames = [
        (f"{f['epoch']}:{f['seq']}", raw)
        for f, raw in zip(socket.frames, socket.raw, strict=True)
        if is_event(f, cid)
    ]
    end = next(i for i, (_, raw) in enumerate(frames) if json.loads(raw)["type"] == "complete")
    frames = frames[: end + 1]
    # Subscribed twice over (by `subscribe` and by sending), each event still comes once.
    assert frames == sse
    assert json.loads(frames[-1][1])["type"] == "complete"


async def test_subscribe_since_mid_reply_gives_every_event_once(
    server: Server, http: httpx.AsyncClient
) -> None:
    user = await sign_up(http)
    async with open_socket(server, user.token) as sender:
        cid = await create(sender)
        async with open_socket(server, user.token) as interrupted:
            await interrupted.ask("subscribe", conversation_id=cid)
            await sender.send("send_message", conversation_id=cid, content=QUESTION)
            before: list[Frame] = []
            while len(before) < 6:
                frame = await interrupted.receive()
                if is_event(frame, cid):
                    before.append(frame)
        assert before[-1]["type"] == "chunk"
        # Back from the last position seen, on a new socket.
        since = f"{before[-1]['epoch']}:{before[-1]['seq']}"
        async with open_socket(server, user.token) as resumed:
            answer = await resumed.ask("subscribe", conversation_id=cid, since=since)
            assert answer == {"conversation_id": cid}
            after = await resumed.events(cid, until={"complete"})
        everything = await sender.events(cid, until={"complete"})
    everything = everything[next(i for i, e in enumerate(everything) if e["type"] == "message") :]
    assert before + after == everything
    check_numbering(before + after)


@pytest.mark.parametrize("since", ["other-epoch:3", "garbage"])
async def test_subscribe_from_an_unknown_position_gets_reset_first(
    server: Server, http: httpx.AsyncClient, since: str
) -> None:
    user = await sign_up(http)
    cid = (await http.post(BASE, json={}, headers=user.headers)).json()["id"]
    async with open_socket(server, user.token) as socket:
        answer, _ = await socket.request("subscribe", conversation_id=cid, since=since)
        assert answer["type"] == "response", answer
        first = await socket.until(lambda f: f.get("conversation_id") == cid)
        assert first[-1] == {"type": "reset", "conversation_id": cid, "reason": first[-1]["reason"]}
        # Live events follow the reset.
        await send(socket, cid)


async def test_cancel_over_the_socket_stops_the_reply(
    server: Server, http: httpx.AsyncClient
) -> None:
    user = await sign_up(http)
    async with open_socket(server, user.token) as socket:
        cid = await create(socket)
        assert await socket.ask("cancel", conversation_id=cid) == {"cancelled": False}
        await socket.send("send_message", conversation_id=cid, content=QUESTION)
        await socket.until(lambda f: f["type"] == "chunk")
        answer, _ = await socket.request("cancel", conversation_id=cid)
        assert answer["type"] == "response" and answer["data"] == {"cancelled": True}, answer
        if not any(is_event(f, cid) and f["type"] == "cancelled" for f in socket.frames):
            await socket.events(cid, until={"cancelled", "complete"})
        events = [f for f in socket.frames if is_event(f, cid)]
        types = [e["type"] for e in events]
        assert "cancelled" in types and "complete" not in types, types
        stop = types.index("cancelled")
        generated = "".join(e["content"] for e in events[:stop] if e["type"] == "chunk")
    reply = (await stored(http, user.headers, cid))[-1]
    assert reply["status"] == "cancelled"
    assert reply["content"] == generated and generated


async def test_a_disconnect_mid_reply_leaves_it_complete_for_the_other_socket(
    server: Server, http: httpx.AsyncClient
) -> None:
    user = await sign_up(http)
    async with open_socket(server, user.token) as watcher:
        cid = await create(watcher)
        async with open_socket(server, user.token) as leaving:
            await leaving.send("send_message", conversation_id=cid, content=QUESTION)
            chunks = 0
            while chunks < 3:
                chunks += (await leaving.receive())["type"] == "chunk"
        # The sender is gone; the reply goes on and the other socket sees it end.
        events = await watcher.events(cid, until={"complete"})
        await watcher.ping()
    reply = events[-1]["message"]
    assert reply["status"] == "complete"
    assert (await stored(http, user.headers, cid))[-1] == reply
