"""Operating a real `parley serve`: one message budget for REST, SSE route 7 and the socket;
`/metrics` on a listener of its own; JSON log lines with request ids and no secrets."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import httpx
import pytest
from httpx_sse import aconnect_sse
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import connect

from tests.server import Server, free_port, parley, running_server, server_env

pytestmark = pytest.mark.anyio
BASE = "/api/v1/chat/conversations"
PASSWORD = "a-secret-passphrase-9"
WAIT_S = 30.0
# Three messages per 30 s, whichever door they come through. The budget's window slides
# (limits' sliding-window counter): the last window's count fades as the next one goes on, so
# a budget spent near the end of one window is partly back a third of the way into the next.
# The window is long enough that the test's six sends never see that on a loaded machine
# (with 10 s they once did).
BUDGET = 3
WINDOW_S = 30


@pytest.fixture(name="metrics_port", scope="module")
def fixture_metrics_port() -> int:
    return free_port()


@pytest.fixture(name="server", scope="module")
def fixture_server(tmp_path_factory: pytest.TempPathFactory, metrics_port: int) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("operate")
    env = server_env(
        tmp,
        assistant_token_delay_ms="0",
        user_message_rate=f"{BUDGET}/{WINDOW_S}seconds",
        metrics_bind=f"127.0.0.1:{metrics_port}",
        log_format="json",
    )
    parley("migrate", env=env)
    with running_server(env, tmp / "server.log") as server:
        yield server
        started = time.monotonic()
        assert server.stop() == 0
        # The metrics listener does not hold the stop up.
        assert time.monotonic() - started < 15
    assert "Traceback" not in server.log_text()


@pytest.fixture(name="http")
async def fixture_http(server: Server) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.url, timeout=WAIT_S) as client:
        yield client


async def sign_up(http: httpx.AsyncClient) -> tuple[str, dict[str, str]]:
    body = {"email": f"op-{uuid.uuid4().hex[:10]}@example.com", "password": PASSWORD}
    assert (await http.post("/auth/register", json=body)).status_code == 201
    token = (await http.post("/auth/login", json=body)).json()["access_token"]
    return str(token), {"Authorization": f"Bearer {token}"}


async def new_conversation(http: httpx.AsyncClient, me: dict[str, str]) -> str:
    return str((await http.post(BASE, json={}, headers=me)).json()["id"])


async def stream(http: httpx.AsyncClient, me: dict[str, str], cid: str) -> list[dict[str, Any]]:
    """Route 7's events until it ends."""
    url = f"{BASE}/{cid}/stream"
    async with aconnect_sse(http, "GET", url, params={"message": "Hello?"}, headers=me) as source:
        assert source.response.status_code == 200
        return [json.loads(event.data) async for event in source.aiter_sse()]


async def socket_send(server: Server, token: str, cid: str) -> dict[str, Any]:
    """One `send_message` over the socket (token in the query string); its answer frame."""
    url = server.url.replace("http://", "ws://") + f"/ws/chat?token={token}"
    async with connect(url) as ws:
        frame = {"type": "send_message", "conversation_id": cid, "content": "Hi", "request_id": "r"}
        await ws.send(json.dumps(frame))
        with anyio.fail_after(WAIT_S):
            while True:
                answer: dict[str, Any] = json.loads(await ws.recv())
                if answer.get("request_id") == "r":
                    return answer


async def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    async with httpx.AsyncClient(timeout=WAIT_S) as client:
        response = await client.get(f"http://127.0.0.1:{port}/metrics")
    assert response.status_code == 200
    found = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(found: dict[Any, float], name: str, **labels: str) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_one_budget_for_every_door(
    server: Server, http: httpx.AsyncClient, metrics_port: int
) -> None:
    token, me = await sign_up(http)
    cid = await new_conversation(http, me)
    before = await scrape(metrics_port)
    # One message through each door: all three draw on the same budget.
    assert (
        await http.post(f"{BASE}/{cid}/messages", json={"message": "Hi"}, headers=me)
    ).status_code == 201
    assert (await stream(http, me, cid))[-1]["type"] == "complete"
    assert (await socket_send(server, token, cid))["type"] == "message_response"
    # Spent: REST answers 429, route 7 an `error` event, the socket a `rate_limited` frame.
    refused = await http.post(f"{BASE}/{cid}/messages", json={"message": "Hi"}, headers=me)
    assert refused.status_code == 429
    assert refused.json()["code"] == "rate_limited"
    assert int(refused.headers["Retry-After"]) >= 1
    events = await stream(http, me, cid)
    assert [(e["type"], e["code"]) for e in events] == [("error", "rate_limited")]
    assert events[0]["retry_after"] >= 1
    frame = await socket_send(server, token, cid)
    assert (frame["type"], frame["code"]) == ("error", "rate_limited")
    # Another user is not affected.
    _, other = await sign_up(http)
    other_cid = await new_conversation(http, other)
    answer = await http.post(f"{BASE}/{other_cid}/messages", json={"message": "Hi"}, headers=other)
    assert answer.status_code == 201
    after = await scrape(metrics_port)
    rejected = value(after, "parley_rate_limited_total", limit="user_messages")
    assert rejected - value(before, "parley_rate_limited_total", limit="user_messages") == 3
    # The budget comes back once its window has passed (waiting is the behaviour under test).
    with anyio.fail_after(2 * WINDOW_S + WAIT_S):
        while refused.status_code == 429:
            await anyio.sleep(int(refused.headers["Retry-After"]))
            refused = await http.post(f"{BASE}/{cid}/messages", json={"message": "Hi"}, headers=me)
    assert refused.status_code == 201


async def test_metrics_on_their_own_listener_move(
    http: httpx.AsyncClient, metrics_port: int
) -> None:
    # Not on the main listener when it has its own.
    assert (await http.get("/metrics")).status_code == 404
    before = await scrape(metrics_port)
    _, me = await sign_up(http)
    cid = await new_conversation(http, me)
    posted = await http.post(
        f"{BASE}/{cid}/messages", json={"message": "Reset my password"}, headers=me
    )
    assert posted.status_code == 201
    after = await scrape(metrics_port)
    route = BASE + "/<uuid:conversation_id>/messages"
    moved = {
        ("parley_http_requests_total", (("method", "POST"), ("route", route), ("status", "201"))),
        (
            "parley_http_request_duration_seconds_count",
            (("method", "POST"), ("route", route), ("status", "201")),
        ),
        ("parley_reply_duration_seconds_count", (("provider", "local"), ("status", "complete"))),
        ("parley_reply_first_token_seconds_count", (("provider", "local"),)),
        ("parley_tokens_streamed_total", (("provider", "local"),)),
        ("parley_password_hashes_total", ()),
    }
    for key in moved:
        assert after.get(key, 0) > before.get(key, 0), key
    assert value(after, "parley_actors", state="live") >= 1
    assert ("parley_retained_event_bytes", ()) in after
    assert ("process_cpu_seconds_total", ()) in after
    # Labels are templates and codes, never ids.
    for name, labels in after:
        for _, label in labels:
            assert cid not in label and "@" not in label, (name, labels)


async def test_log_lines_carry_the_request_id_and_no_secret(
    server: Server, http: httpx.AsyncClient
) -> None:
    token, me = await sign_up(http)
    cid = await new_conversation(http, me)
    await socket_send(server, token, cid)
    # A token in a query string (as a socket's) never reaches the log either.
    assert (await http.get(f"/healthz?token={token}")).status_code == 200
    marked = await http.get(BASE, headers=me | {"X-Request-ID": "trace-42"})
    assert marked.headers["X-Request-ID"] == "trace-42"
    fresh = (await http.get("/healthz")).headers["X-Request-ID"]
    # The line is written once the answer is sent: wait for it.
    with anyio.fail_after(WAIT_S):
        while fresh not in server.log_text():  # noqa: ASYNC110 (a file: no event to wait on)
            await anyio.sleep(0.05)
    text = server.log_text()
    assert token not in text and PASSWORD not in text
    lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    access = [line for line in lines if line["logger"] == "parley.access"]
    assert {"request_id", "method", "path", "route", "status", "duration_ms"} <= set(access[0])
    traced = [line for line in access if line["request_id"] == "trace-42"]
    assert [(t["path"], t["route"], t["status"]) for t in traced] == [(BASE, BASE, 200)]
    sockets = [line for line in access if line["path"] == "/ws/chat"]
    assert sockets and all(line["status"] == 101 for line in sockets)
    # A rejection logged while serving a request carries that request's id.
    assert all(line["request_id"] != "-" for line in lines if line["logger"] == "chat.throttle")
    # Every request has its own id, and each id is one line.
    ids = [line["request_id"] for line in access]
    assert len(ids) == len(set(ids))
