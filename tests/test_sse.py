"""Server-Sent Events end to end: a real Hypercorn server, a real SSE client (httpx-sse)."""

from __future__ import annotations

import json
import signal
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from httpx_sse import EventSource, aconnect_sse

from tests.server import Server, parley, running_server, server_env

pytestmark = pytest.mark.anyio
BASE = "/api/v1/chat/conversations"
QUESTION = "How do I reset my password?"


@pytest.fixture(scope="module", name="server")
def fixture_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("sse")
    env = server_env(tmp, assistant_token_delay_ms="10", sse_keepalive_s="0.3")
    parley("migrate", env=env)
    with running_server(env, tmp / "server.log") as server:
        yield server
        assert server.stop() == 0
    assert "Traceback" not in server.log_text()


@pytest.fixture(name="http")
async def fixture_http(server: Server) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.url, timeout=20) as client:
        yield client


async def sign_up(http: httpx.AsyncClient) -> dict[str, str]:
    email = f"sse-{uuid.uuid4().hex[:8]}@example.com"
    body = {"email": email, "password": "password-1"}
    assert (await http.post("/auth/register", json=body)).status_code == 201
    token = (await http.post("/auth/login", json=body)).json()["access_token"]
    return {"Authorization": f"Bearer {token}"}


async def new_conversation(http: httpx.AsyncClient, headers: dict[str, str]) -> str:
    response = await http.post(BASE, json={}, headers=headers)
    assert response.status_code == 201
    return str(response.json()["id"])


async def read_events(source: EventSource, until: str | None = "complete") -> list[dict[str, Any]]:
    """Events (with their SSE id) until one of type `until`, or the end of the stream."""
    events = []
    async for sse in source.aiter_sse():
        event = json.loads(sse.data)
        event["_id"] = sse.id
        events.append(event)
        if event["type"] == until:
            break
    return events


def check_numbering(events: list[dict[str, Any]]) -> None:
    numbered = [e for e in events if e["type"] != "reset"]
    seqs = [e["seq"] for e in numbered]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), seqs
    assert len({e["epoch"] for e in numbered}) == 1
    for e in numbered:
        assert e["_id"] == f"{e['epoch']}:{e['seq']}"


async def test_stream_sends_and_streams_the_reply(http: httpx.AsyncClient) -> None:
    me = await sign_up(http)
    cid = await new_conversation(http, me)
    url = f"{BASE}/{cid}/stream"
    async with aconnect_sse(http, "GET", url, params={"message": QUESTION}, headers=me) as source:
        assert source.response.headers["content-type"] == "text/event-stream"
        assert source.response.headers["cache-control"] == "no-cache"
        events = await read_events(source, until=None)  # the server ends the stream itself
    types = [e["type"] for e in events]
    assert types[0] == "message" and events[0]["message"]["content"] == QUESTION
    assert types[-1] == "complete"
    assert set(types[1:-1]) == {"chunk"}
    check_numbering(events)
    reply = events[-1]["message"]
    assert reply["content"] == "".join(e["content"] for e in events if e["type"] == "chunk")
    assert reply["entity_references"][0]["id"] == "reset-password"
    stored = (await http.get(f"{BASE}/{cid}/messages", headers=me)).json()["items"]
    assert [m["id"] for m in stored] == [events[0]["message"]["id"], reply["id"]]
    assert stored[1]["status"] == "complete"


async def test_a_retried_stream_replays_the_first_answer(http: httpx.AsyncClient) -> None:
    me = await sign_up(http)
    cid = await new_conversation(http, me)
    url = f"{BASE}/{cid}/stream"
    headers = me | {"Idempotency-Key": "stream-1"}
    answers = []
    for _ in range(2):
        params = {"message": QUESTION}
        async with aconnect_sse(http, "GET", url, params=params, headers=headers) as source:
            events = await read_events(source, until=None)
        answers.append((events[0]["message"], events[-1]["message"]))
    assert answers[0] == answers[1]
    assert events[-1]["type"] == "complete" and events[-1]["conversation_id"] == cid
    stored = (await http.get(f"{BASE}/{cid}/messages", headers=me)).json()
    assert stored["total"] == 2


async def test_the_first_reply_titles_the_conversation(http: httpx.AsyncClient) -> None:
    me = await sign_up(http)
    cid = await new_conversation(http, me)
    async with aconnect_sse(http, "GET", f"{BASE}/{cid}/events", headers=me) as source:
        response = await http.post(f"{BASE}/{cid}/messages", json={"message": QUESTION}, headers=me)
        assert response.status_code == 201
        events = await read_events(source, until="conversation_updated")
    assert events[-1]["conversation"]["title"] == QUESTION
    listed = (await http.get(BASE, headers=me)).json()["items"][0]
    assert (listed["title"], listed["total_messages"]) == (QUESTION, 2)


async def test_two_subscribers_see_the_same_events(http: httpx.AsyncClient) -> None:
    me = await sign_up(http)
    cid = await new_conversation(http, me)
    url = f"{BASE}/{cid}/events"
    async with (
        aconnect_sse(http, "GET", url, headers=me) as first,
        aconnect_sse(http, "GET", url, headers=me) as second,
    ):
        posted = await http.post(
            f"{BASE}/{cid}/messages",
            json={"message": QUESTION},
            headers=me | {"Prefer": "respond-async"},
        )
        assert posted.status_code == 202
        a = await read_events(first)
        b = await read_events(second)
    assert a == b
    check_numbering(a)


async def test_resume_with_last_event_id_gives_every_event_once(http: httpx.AsyncClient) -> None:
    me = await sign_up(http)
    cid = await new_conversation(http, me)
    url = f"{BASE}/{cid}/events"
    async with aconnect_sse(http, "GET", url, headers=me) as reference:
        async with aconnect_sse(http, "GET", url, headers=me) as interrupted:
            await http.post(
                f"{BASE}/{cid}/messages",
                json={"message": QUESTION},
                headers=me | {"Prefer": "respond-async"},
            )
            before: list[dict[str, Any]] = []
            async for sse in interrupted.aiter_sse():
                before.append(json.loads(sse.data) | {"_id": sse.id})
                if len(before) == 6:
                    break
        # Disconnected mid-reply; come back from the last id seen.
        resume = {"Last-Event-ID": before[-1]["_id"]}
        async with aconnect_sse(http, "GET", url, headers=me | resume) as resumed:
            after = await read_events(resumed)
        everything = await read_events(reference)
    assert before[-1]["type"] == "chunk" and after[-1]["type"] == "complete"
    assert before + after == everything
    check_numbering(before + after)


async def test_unknown_position_gets_reset_first(http: httpx.AsyncClient) -> None:
    me = await sign_up(http)
    cid = await new_conversation(http, me)
    for last_id in ["other-epoch:3", "garbage"]:
        headers = me | {"Last-Event-ID": last_id}
        async with aconnect_sse(http, "GET", f"{BASE}/{cid}/events", headers=headers) as source:
            first = await anext(source.aiter_sse())
        assert first.id == ""
        assert json.loads(first.data)["type"] == "reset"


async def test_disconnect_mid_stream_leaves_the_reply_complete(http: httpx.AsyncClient) -> None:
    me = await sign_up(http)
    cid = await new_conversation(http, me)
    async with aconnect_sse(http, "GET", f"{BASE}/{cid}/events", headers=me) as watcher:
        url = f"{BASE}/{cid}/stream"
        params = {"message": QUESTION}
        async with aconnect_sse(http, "GET", url, params=params, headers=me) as source:
            chunks = 0
            async for sse in source.aiter_sse():
                chunks += json.loads(sse.data)["type"] == "chunk"
                if chunks == 3:
                    break
        # The client is gone; the other subscriber still gets the whole reply.
        events = await read_events(watcher)
    reply = events[-1]["message"]
    assert reply["status"] == "complete"
    stored = (await http.get(f"{BASE}/{cid}/messages", headers=me)).json()["items"]
    assert stored[-1] == reply
    assert len(reply["content"]) > 50


async def test_cancel_stops_the_reply_and_keeps_the_partial_text(http: httpx.AsyncClient) -> None:
    me = await sign_up(http)
    cid = await new_conversation(http, me)
    url = f"{BASE}/{cid}/stream"
    text = ""
    async with aconnect_sse(http, "GET", url, params={"message": QUESTION}, headers=me) as source:
        events = []
        async for sse in source.aiter_sse():
            event = json.loads(sse.data)
            events.append(event)
            if event["type"] == "chunk":
                text += event["content"]
                if len(text.split()) == 5:
                    cancelled = await http.post(f"{BASE}/{cid}/cancel", headers=me)
                    assert cancelled.status_code == 202
                    assert cancelled.json() == {"cancelled": True}
    assert events[-1]["type"] == "cancelled"
    partial = events[-1]["message"]
    assert partial["status"] == "cancelled"
    assert partial["content"] == text
    stored = (await http.get(f"{BASE}/{cid}/messages", headers=me)).json()["items"]
    assert (stored[-1]["status"], stored[-1]["content"]) == ("cancelled", text)
    # Nothing is running now: cancelling again is accepted and says so.
    again = await http.post(f"{BASE}/{cid}/cancel", headers=me)
    assert (again.status_code, again.json()) == (202, {"cancelled": False})


async def test_deleting_the_conversation_ends_its_streams(http: httpx.AsyncClient) -> None:
    me = await sign_up(http)
    cid = await new_conversation(http, me)
    url = f"{BASE}/{cid}/stream"
    with anyio.fail_after(10):
        async with (
            aconnect_sse(http, "GET", f"{BASE}/{cid}/events", headers=me) as watcher,
            aconnect_sse(http, "GET", url, params={"message": QUESTION}, headers=me) as source,
        ):
            events = []
            async for sse in source.aiter_sse():
                event = json.loads(sse.data)
                events.append(event)
                if event["type"] == "chunk" and len(events) == 3:
                    deleted = await http.delete(f"{BASE}/{cid}", headers=me)
                    assert deleted.status_code == 204
            # Both streams end by themselves: the server closes them.
            watched = await read_events(watcher, until=None)
    assert events[-1]["type"] == "conversation_deleted"
    assert watched[-1]["type"] == "conversation_deleted"
    assert (await http.get(f"{BASE}/{cid}/messages", headers=me)).status_code == 404


async def test_idle_streams_get_keep_alive_comments(http: httpx.AsyncClient) -> None:
    me = await sign_up(http)
    cid = await new_conversation(http, me)
    comments = []
    async with http.stream("GET", f"{BASE}/{cid}/events", headers=me) as response:
        with anyio.fail_after(5):
            async for line in response.aiter_lines():
                if line.startswith(":"):
                    comments.append(line)
                if len(comments) == 3:
                    break
    assert comments == [": connected", ": keep-alive", ": keep-alive"]


async def test_auth_and_ownership(http: httpx.AsyncClient) -> None:
    owner, intruder = await sign_up(http), await sign_up(http)
    cid = await new_conversation(http, owner)
    routes = [
        ("GET", f"{BASE}/{cid}/stream", {"message": "hi"}),
        ("GET", f"{BASE}/{cid}/events", None),
        ("POST", f"{BASE}/{cid}/cancel", None),
    ]
    for method, url, params in routes:
        for headers, status in [({}, 401), ({"Authorization": "Bearer x"}, 401), (intruder, 404)]:
            response = await http.request(method, url, params=params, headers=headers)
            assert response.status_code == status, (method, url, headers)
            assert response.headers["content-type"] == "application/json"
    for params in [{}, {"message": ""}, {"message": "x" * 10_001}]:
        response = await http.get(f"{BASE}/{cid}/stream", params=params, headers=owner)
        assert response.status_code == 422, params
    assert (await http.get(f"{BASE}/{uuid.uuid4()}/events", headers=owner)).status_code == 404


async def test_stop_with_open_streams_ends_within_the_grace_period(tmp_path: Path) -> None:
    env = server_env(tmp_path, shutdown_grace_s="2")
    parley("migrate", env=env)
    with running_server(env, tmp_path / "server.log") as server:
        lines = []
        with anyio.fail_after(15):
            async with httpx.AsyncClient(base_url=server.url, timeout=20) as http:
                me = await sign_up(http)
                cid = await new_conversation(http, me)
                async with http.stream("GET", f"{BASE}/{cid}/events", headers=me) as response:
                    async for line in response.aiter_lines():
                        lines.append(line)
                        if line == ": connected":
                            # SIGTERM while the stream is open: the server must end it.
                            server.process.send_signal(signal.SIGTERM)
            code = await anyio.to_thread.run_sync(server.process.wait)
        assert lines[0] == ": connected"
        assert code == 0
    assert "Traceback" not in server.log_text()
