"""Replies that act: a real `parley serve` with the OpenAI provider on a scripted model that
asks for tools, Parley's own MCP server and the stub server, read over SSE."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from httpx_sse import aconnect_sse
from websockets.asyncio.client import connect

from tests.accounts import BASE, new_conversation, sign_up
from tests.server import ROOT, Server, free_port, parley, running_server, server_env
from tests.tools.conftest import MARKER, servers_file
from tests.tools.processes import pids_with_env, wait_until
from tests.tools.scripted_openai import NO_TOOLS_LEFT

pytestmark = pytest.mark.anyio
TERMINAL = {"complete", "cancelled", "error"}


@pytest.fixture(scope="module", name="model")
def fixture_model(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The scripted model in a process of its own, its base URL."""
    port = free_port()
    log = tmp_path_factory.mktemp("model") / "model.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.tools.scripted_openai", str(port)],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                # Not listening yet: the connect attempt is the wait.
                time.sleep(0.05)
        else:
            raise RuntimeError(f"the scripted model did not start:\n{log.read_text()}")
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture(scope="module", name="marker")
def fixture_marker() -> str:
    return uuid.uuid4().hex


@pytest.fixture(scope="module", name="server")
def fixture_server(
    tmp_path_factory: pytest.TempPathFactory, model: str, marker: str
) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("replies")
    env = server_env(
        tmp,
        assistant_provider="openai",
        openai_base_url=model,
        openai_api_key="test-key",
        openai_model="scripted",
        openai_max_retries="0",
        mcp_config=str(servers_file(tmp, marker, tmp / "hanging")),
        mcp_max_tool_rounds="2",
    )
    parley("migrate", env=env)
    with running_server(env, tmp / "server.log") as server:
        yield server
        assert server.stop() == 0
    assert "Traceback" not in server.log_text()
    # Stopping the server stopped every MCP server it ran: none is left in the process table.
    assert mcp_processes(marker, tmp / "var") == set()


def mcp_processes(marker: str, var: Path) -> set[int]:
    return pids_with_env(MARKER, marker) | pids_with_env("PARLEY_VAR_DIR", str(var))


@pytest.fixture(name="http")
async def fixture_http(server: Server) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
        yield client


def script(*rounds: list[tuple[str, dict[str, Any]]]) -> str:
    """A user message that makes the scripted model ask for these calls, round by round."""
    return "TOOLS:" + json.dumps([[list(call) for call in calls] for calls in rounds])


async def ask(
    http: httpx.AsyncClient, me: dict[str, str], cid: str, message: str
) -> list[dict[str, Any]]:
    """Send over SSE; every event until the reply's terminal one."""
    events = []
    url = f"{BASE}/{cid}/stream"
    async with aconnect_sse(http, "GET", url, params={"message": message}, headers=me) as source:
        async for sse in source.aiter_sse():
            events.append(json.loads(sse.data))
            if events[-1]["type"] in TERMINAL:
                break
    return events


def of_type(events: list[dict[str, Any]], *types: str) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] in types]


def text_of(events: list[dict[str, Any]]) -> str:
    return "".join(e["content"] for e in of_type(events, "chunk"))


TICKET = {
    "subject": "Refund not received",
    "description": "I returned the shoes two weeks ago.",
    "priority": "high",
}


async def test_a_model_opens_a_ticket_and_the_reply_references_it(
    http: httpx.AsyncClient, server: Server
) -> None:
    _, me = await sign_up(http, server)
    cid = await new_conversation(http, server, me)

    events = await ask(http, me, cid, script([("parley__create_ticket", TICKET)]))

    # Text, then the call and its result, then the text after it, in order.
    kinds = [e["type"] for e in events if e["type"] in ("chunk", "tool_call", "tool_result")]
    first_call = kinds.index("tool_call")
    assert kinds[:first_call] == ["chunk"] and kinds[first_call + 1] == "tool_result"
    call, result = of_type(events, "tool_call", "tool_result")
    assert call["name"] == "parley__create_ticket"
    assert call["arguments"] == TICKET
    assert (result["name"], result["ok"]) == ("parley__create_ticket", True)
    assert text_of(events).startswith("Let me check.")
    assert "Ticket #1 is open." in text_of(events)
    reply = events[-1]["message"]
    assert events[-1]["type"] == "complete"
    tickets = (await http.get("/api/v1/tickets", headers=me)).json()["items"]
    assert len(tickets) == 1
    ticket = tickets[0]
    assert (ticket["subject"], ticket["priority"]) == (TICKET["subject"], "high")
    assert ticket["conversation_id"] == cid
    label = "Ticket #1: Refund not received"
    assert reply["entity_references"] == [{"type": "ticket", "id": ticket["id"], "label": label}]
    assert reply["entity_links"] == [{"title": label, "url": f"/api/v1/tickets/{ticket['id']}"}]
    stored = (await http.get(f"{BASE}/{cid}/messages", headers=me)).json()["items"][-1]
    assert stored["entity_references"] == reply["entity_references"]
    assert stored["content"] == reply["content"] == text_of(events)


async def test_a_hung_tool_times_out_and_the_reply_goes_on(
    http: httpx.AsyncClient, server: Server
) -> None:
    _, me = await sign_up(http, server)
    cid = await new_conversation(http, server, me)

    events = await ask(http, me, cid, script([("stub__hang", {})]))

    result = of_type(events, "tool_result")
    assert [(r["name"], r["ok"]) for r in result] == [("stub__hang", False)]
    assert events[-1]["type"] == "complete"
    assert "A tool failed: Error: stub__hang did not answer within 2 s" in text_of(events)


async def test_tool_rounds_are_bounded(http: httpx.AsyncClient, server: Server) -> None:
    _, me = await sign_up(http, server)
    cid = await new_conversation(http, server, me)

    events = await ask(http, me, cid, "loop")

    # MCP_MAX_TOOL_ROUNDS=2: two rounds of calls, then a completion without tools offered.
    assert [e["name"] for e in of_type(events, "tool_call")] == [
        "parley__search_knowledge_base"
    ] * 2
    assert all(e["ok"] for e in of_type(events, "tool_result"))
    assert events[-1]["type"] == "complete"
    assert text_of(events).rstrip().endswith(NO_TOOLS_LEFT)


async def test_a_model_that_will_not_stop_calling_tools_fails_the_reply(
    http: httpx.AsyncClient, server: Server
) -> None:
    _, me = await sign_up(http, server)
    cid = await new_conversation(http, server, me)

    events = await ask(http, me, cid, "stubborn")

    assert len(of_type(events, "tool_result")) == 2
    assert events[-1]["type"] == "error"
    reply = events[-1]["message"]
    assert reply["status"] == "failed"
    assert reply["error"]["code"] == "tool_rounds_exceeded"
    # What it said before is kept.
    assert reply["content"] == text_of(events)
    assert reply["content"].startswith("Let me check.")


async def test_a_model_cannot_reach_another_users_tickets(
    http: httpx.AsyncClient, server: Server
) -> None:
    _, owner = await sign_up(http, server)
    owner_cid = await new_conversation(http, server, owner)
    await ask(http, owner, owner_cid, script([("parley__create_ticket", TICKET)]))
    ticket = (await http.get("/api/v1/tickets", headers=owner)).json()["items"][0]
    owner_id = (await http.get("/auth/me", headers=owner)).json()["id"]
    _, intruder = await sign_up(http, server)
    cid = await new_conversation(http, server, intruder)

    events = await ask(
        http,
        intruder,
        cid,
        script(
            [
                ("parley__get_ticket", {"ticket_id": ticket["id"]}),
                ("parley__get_ticket", {"ticket_id": ticket["number"], "user_id": owner_id}),
                ("parley__add_ticket_comment", {"ticket_id": ticket["id"], "body": "Closed!"}),
            ],
            [("parley__list_tickets", {"user_id": owner_id})],
        ),
    )

    results = [(r["name"], r["ok"]) for r in of_type(events, "tool_result")]
    assert results == [
        ("parley__get_ticket", False),
        ("parley__get_ticket", False),
        ("parley__add_ticket_comment", False),
        # A `user_id` argument changes nothing: the list is the intruder's own, empty one.
        ("parley__list_tickets", True),
    ]
    text = text_of(events)
    assert f"ticket {ticket['id']} not found" in text
    assert '"tickets": [], "total": 0' in text
    assert ticket["subject"] not in text
    # The owner's ticket is as it was, and the intruder has none.
    detail = (await http.get(f"/api/v1/tickets/{ticket['id']}", headers=owner)).json()
    assert detail["comments"] == []
    assert (await http.get(f"/api/v1/tickets/{ticket['id']}", headers=intruder)).status_code == 404
    assert (await http.get("/api/v1/tickets", headers=intruder)).json()["items"] == []


async def test_the_tools_route_reports_each_server(http: httpx.AsyncClient, server: Server) -> None:
    assert (await http.get("/api/v1/tools")).status_code == 401
    _, me = await sign_up(http, server)

    # The first request starts the servers and answers at once; they settle soon after.
    with anyio.fail_after(60):
        while True:
            response = await http.get("/api/v1/tools", headers=me)
            assert response.status_code == 200
            states = {s["state"] for s in response.json()["servers"]}
            if not states & {"idle", "starting"}:
                break
            await anyio.sleep(0.1)

    servers = {s["name"]: s for s in response.json()["servers"]}
    assert set(servers) == {"parley", "time", "stub", "broken", "off"}
    assert servers["broken"]["state"] == "failed"
    assert servers["broken"]["last_error"].startswith("command not found")
    assert servers["broken"]["tools"] == []
    assert servers["off"]["state"] == "disabled"
    parley_tools = {t["name"] for t in servers["parley"]["tools"]}
    assert {"parley__search_knowledge_base", "parley__create_ticket"} <= parley_tools
    assert servers["parley"]["state"] == servers["time"]["state"] == "ready"
    search = next(
        t for t in servers["parley"]["tools"] if t["name"].endswith("search_knowledge_base")
    )
    assert search["input_schema"]["required"] == ["query"]


async def test_cancelling_a_reply_during_a_tool_call(
    http: httpx.AsyncClient, server: Server, tmp_path_factory: pytest.TempPathFactory
) -> None:
    _, me = await sign_up(http, server)
    cid = await new_conversation(http, server, me)
    events = []
    url = f"{BASE}/{cid}/stream"
    message = script([("stub__hang", {})])
    async with aconnect_sse(http, "GET", url, params={"message": message}, headers=me) as source:
        async for sse in source.aiter_sse():
            events.append(json.loads(sse.data))
            if events[-1]["type"] == "tool_call":
                assert (await http.post(f"{BASE}/{cid}/cancel", headers=me)).json() == {
                    "cancelled": True
                }
            if events[-1]["type"] in TERMINAL:
                break
    assert events[-1]["type"] == "cancelled"
    assert events[-1]["message"]["content"] == "Let me check. "
    assert of_type(events, "tool_result") == []
    # The MCP servers are still there for the next reply.
    again = await ask(http, me, cid, script([("stub__echo", {"text": "hi"})]))
    assert [r["ok"] for r in of_type(again, "tool_result")] == [True]


async def test_tool_events_reach_a_websocket(http: httpx.AsyncClient, server: Server) -> None:
    token, me = await sign_up(http, server)
    cid = await new_conversation(http, server, me)
    url = server.url.replace("http://", "ws://", 1) + f"/ws/chat?token={token}"
    frames: list[dict[str, Any]] = []
    async with connect(url) as socket:
        content = script([("stub__echo", {"text": "over the socket"})])
        await socket.send(
            json.dumps({"type": "send_message", "conversation_id": cid, "content": content})
        )
        with anyio.fail_after(30):
            while not frames or frames[-1]["type"] != "message_response":
                frames.append(json.loads(await socket.recv()))
    call, result = of_type(frames, "tool_call", "tool_result")
    assert (call["name"], call["arguments"]) == ("stub__echo", {"text": "over the socket"})
    assert (result["name"], result["ok"]) == ("stub__echo", True)
    assert "over the socket" in frames[-1]["data"]["content"]


async def test_a_stop_during_a_tool_call_leaves_no_mcp_process(tmp_path: Path, model: str) -> None:
    marker = uuid.uuid4().hex
    # The stub's call would hang for a minute; the stop does not wait for it (no grace).
    stub = {
        "command": sys.executable,
        "args": ["-m", "tests.tools.stub_server"],
        "env": {MARKER: marker, "HANG_FILE": str(tmp_path / "hanging")},
        "cwd": str(ROOT),
        "timeout_s": 60,
    }
    env = server_env(
        tmp_path,
        assistant_provider="openai",
        openai_base_url=model,
        openai_api_key="test-key",
        openai_model="scripted",
        mcp_config=str(servers_file(tmp_path, marker, tmp_path / "hanging", stub=stub)),
        shutdown_grace_s="0",
    )
    parley("migrate", env=env)
    with running_server(env, tmp_path / "server.log") as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
            _, me = await sign_up(http, server)
            cid = await new_conversation(http, server, me)
            sent = await http.post(
                f"{BASE}/{cid}/messages",
                json={"message": script([("stub__hang", {})])},
                headers=me | {"Prefer": "respond-async"},
            )
            assert sent.status_code in (201, 202), sent.text
            await wait_until((tmp_path / "hanging").exists, 30)
            assert len(mcp_processes(marker, tmp_path / "var")) >= 2  # parley (+ time) and stub
            assert server.stop() == 0
    assert "Traceback" not in server.log_text()
    assert mcp_processes(marker, tmp_path / "var") == set()
