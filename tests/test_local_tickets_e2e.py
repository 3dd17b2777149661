"""A person asks the offline assistant for a ticket and finds it at `GET /api/v1/tickets`: a real
server, its real MCP subprocess, the SSE stream showing the tool call, on both backends."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from httpx_sse import aconnect_sse
from websockets.asyncio.client import connect

from tests.accounts import new_conversation, sign_up
from tests.server import Server, running_server, server_env

pytestmark = pytest.mark.anyio
BASE = "/api/v1/chat/conversations"
# The first ticket call starts Parley's MCP server (a Python process) on a busy machine.
WAIT_S = 60


@pytest.fixture(name="server")
def fixture_server(tmp_path: Path, database_url: str) -> Iterator[Server]:
    env = server_env(tmp_path, database_url=database_url, assistant_token_delay_ms="1")
    with running_server(env, tmp_path / "server.log") as server:
        yield server
        # A SIGTERM stop ends the server and its MCP process cleanly.
        assert server.stop() == 0, server.log_text()[-3000:]


async def stream(
    http: httpx.AsyncClient, server: Server, me: dict[str, str], cid: str, message: str
) -> list[dict[str, Any]]:
    url = f"{server.url}{BASE}/{cid}/stream"
    with anyio.fail_after(WAIT_S):
        async with aconnect_sse(http, "GET", url, params={"message": message}, headers=me) as s:
            return [json.loads(sse.data) async for sse in s.aiter_sse()]


async def test_asking_for_a_ticket_opens_one_visible_over_rest(server: Server) -> None:
    async with httpx.AsyncClient(timeout=WAIT_S) as http:
        _, me = await sign_up(http, server)
        cid = await new_conversation(http, server, me)
        events = await stream(http, server, me, cid, "I want to open a ticket about my refund")

        kinds = [e["type"] for e in events]
        assert kinds.index("tool_call") < kinds.index("tool_result") < kinds.index("chunk")
        call = next(e for e in events if e["type"] == "tool_call")
        assert call["name"] == "parley__create_ticket"
        assert call["arguments"]["subject"] == "My refund"
        result = next(e for e in events if e["type"] == "tool_result")
        assert (result["name"], result["ok"]) == ("parley__create_ticket", True)
        complete = events[-1]
        assert complete["type"] == "complete", events[-3:]
        reply = complete["message"]
        assert 'Ticket #1 for you: "My refund"' in reply["content"]

        listed = (await http.get(f"{server.url}/api/v1/tickets", headers=me)).json()
        assert listed["total"] == 1
        (ticket,) = listed["items"]
        assert ticket["number"] == 1
        assert ticket["subject"] == "My refund"
        assert ticket["description"] == "I want to open a ticket about my refund"
        assert ticket["conversation_id"] == cid
        label = "Ticket #1: My refund"
        assert reply["entity_references"] == [
            {"type": "ticket", "id": ticket["id"], "label": label}
        ]
        assert reply["entity_links"] == [{"title": label, "url": f"/api/v1/tickets/{ticket['id']}"}]

        # The stored reply says the same.
        stored = (await http.get(f"{server.url}{BASE}/{cid}/messages", headers=me)).json()
        assert stored["items"][-1]["entity_references"] == reply["entity_references"]
        detail = await http.get(f"{server.url}{reply['entity_links'][0]['url']}", headers=me)
        assert detail.status_code == 200 and detail.json()["comments"] == []

        # Another user sees none of it.
        _, other = await sign_up(http, server)
        assert (await http.get(f"{server.url}/api/v1/tickets", headers=other)).json()["total"] == 0
        detail = await http.get(f"{server.url}/api/v1/tickets/{ticket['id']}", headers=other)
        assert detail.status_code == 404


async def test_yes_to_the_offer_files_the_question(server: Server) -> None:
    async with httpx.AsyncClient(timeout=WAIT_S) as http:
        _, me = await sign_up(http, server)
        cid = await new_conversation(http, server, me)
        question = "the vase in my parcel arrived in pieces"
        events = await stream(http, server, me, cid, question)
        offer = events[-1]["message"]["content"]
        assert "open a support ticket" in offer
        assert "tool_call" not in [e["type"] for e in events]

        response = await http.post(
            f"{server.url}{BASE}/{cid}/messages", json={"message": "yes please"}, headers=me
        )
        assert response.status_code == 201
        assert "Ticket #1 for you" in response.json()["content"]
        (ticket,) = (await http.get(f"{server.url}/api/v1/tickets", headers=me)).json()["items"]
        assert ticket["description"] == question


async def test_over_the_websocket_the_call_shows_as_events_and_in_the_answer(
    server: Server,
) -> None:
    async with httpx.AsyncClient(timeout=WAIT_S) as http:
        token, me = await sign_up(http, server)
        cid = await new_conversation(http, server, me)
        url = server.url.replace("http://", "ws://") + f"/ws/chat?token={token}"
        frames: list[dict[str, Any]] = []
        async with connect(url) as ws:
            await ws.send(
                json.dumps(
                    {
                        "type": "send_message",
                        "conversation_id": cid,
                        "content": "could you file a support ticket for my broken charger",
                        "request_id": "r1",
                    }
                )
            )
            with anyio.fail_after(WAIT_S):
                while not frames or frames[-1].get("request_id") != "r1":
                    frames.append(json.loads(await ws.recv()))
        kinds = [f["type"] for f in frames]
        assert kinds.index("tool_call") < kinds.index("tool_result") < kinds.index("complete")
        call = frames[kinds.index("tool_call")]
        assert (call["name"], call["arguments"]["subject"]) == (
            "parley__create_ticket",
            "My broken charger",
        )
        assert frames[kinds.index("tool_result")]["ok"] is True
        answer = frames[-1]
        assert answer["type"] == "message_response"
        (reference,) = answer["data"]["entity_references"]
        assert reference["label"] == "Ticket #1: My broken charger"
        detail = await http.get(f"{server.url}/api/v1/tickets/{reference['id']}", headers=me)
        assert detail.json()["conversation_id"] == cid
