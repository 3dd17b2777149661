"""What schemathesis found against `/openapi.json`, one test per finding (issue #6, §5)."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from jsonschema import Draft202012Validator
from quart import Quart
from quart.typing import TestClientProtocol as Client

from chat.app import create_app
from chat.root import running_services
from tests.conftest import Register, auth, make_settings

pytestmark = pytest.mark.anyio

BASE = "/api/v1/chat/conversations"
NOT_UTF8 = b'{"title": "\xff\xfe"}'


async def conversation(client: Client, headers: dict[str, str]) -> str:
    response = await client.post(BASE, json={}, headers=auth(headers))
    assert response.status_code == 201
    return str((await response.get_json())["id"])


async def document_of(client: Client) -> dict[str, Any]:
    document: dict[str, Any] = await (await client.get("/openapi.json")).get_json()
    return document


async def test_a_body_that_is_not_utf8_is_a_validation_error(
    client: Client, register: Register
) -> None:
    headers = auth(await register())
    cid = await conversation(client, headers)
    for method, path in [
        ("POST", "/auth/login"),
        ("POST", "/auth/register"),
        ("POST", BASE),
        ("PATCH", f"{BASE}/{cid}/title"),
        ("POST", f"{BASE}/{cid}/messages"),
    ]:
        response = await client.open(
            path,
            method=method,
            data=NOT_UTF8,
            headers={**headers, "Content-Type": "application/json"},
        )
        assert response.status_code == 422, (method, path)
        body = await response.get_json()
        assert body["code"] == "validation_error"
        assert isinstance(body["detail"], list)


async def test_required_query_and_bodies_are_documented_as_required(client: Client) -> None:
    document = await document_of(client)
    stream = document["paths"][BASE + "/{conversation_id}/stream"]["get"]
    message = next(p for p in stream["parameters"] if p["name"] == "message")
    assert message["required"] is True
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            if "requestBody" in operation:
                assert operation["requestBody"]["required"] is True, (path, method)
            for parameter in operation.get("parameters", []):
                if parameter["in"] == "path":
                    assert parameter["schema"] == {"type": "string", "format": "uuid"}


async def test_text_limits_hold_for_the_text_as_sent(client: Client, register: Register) -> None:
    """A 10,001-character message passed its documented `maxLength` once stripped."""
    headers = auth(await register())
    cid = await conversation(client, headers)
    mostly_spaces = "hi" + " " * 10_000
    response = await client.post(
        f"{BASE}/{cid}/messages", json={"message": mostly_spaces}, headers=headers
    )
    assert response.status_code == 422
    response = await client.post(
        f"{BASE}/{cid}/messages", json={"message": " \t "}, headers=headers
    )
    assert response.status_code == 422
    response = await client.patch(
        f"{BASE}/{cid}/title", json={"title": "  Mine  "}, headers=headers
    )
    assert (await response.get_json())["title"] == "Mine"
    # White space is Unicode's, as the document's regex engines read `\s`: U+001F is not.
    response = await client.patch(f"{BASE}/{cid}/title", json={"title": "\x1f"}, headers=headers)
    assert response.status_code == 200
    # PostgreSQL cannot store NUL: refused up front, not a failed reply (503) or a 500.
    message = {"message": "a\x00b"}
    response = await client.post(f"{BASE}/{cid}/messages", json=message, headers=headers)
    assert response.status_code == 422
    response = await client.post("/auth/login", json={"email": "a\x00@b.io", "password": "x"})
    assert response.status_code == 422


async def test_an_offset_beyond_the_databases_is_a_validation_error(
    client: Client, register: Register
) -> None:
    headers = auth(await register())
    response = await client.get(f"{BASE}?offset={2**70}", headers=headers)
    assert response.status_code == 422
    cid = await conversation(client, headers)
    response = await client.get(f"{BASE}/{cid}/messages?offset={2**31 - 2}", headers=headers)
    assert response.status_code == 422
    document = await document_of(client)
    offset = next(p for p in document["paths"][BASE]["get"]["parameters"] if p["name"] == "offset")
    assert offset["schema"]["maximum"] == 1_000_000_000


async def test_delete_documents_its_204(client: Client, register: Register) -> None:
    headers = auth(await register())
    cid = await conversation(client, headers)
    response = await client.delete(f"{BASE}/{cid}", headers=headers)
    assert response.status_code == 204
    document = await document_of(client)
    responses = document["paths"][BASE + "/{conversation_id}"]["delete"]["responses"]
    assert "204" in responses and "content" not in responses["204"]


async def test_an_undeclared_method_gets_405_with_allow(client: Client, register: Register) -> None:
    headers = auth(await register())
    cid = await conversation(client, headers)
    for method, path, allowed in [
        ("TRACE", "/healthz", {"GET"}),
        ("PUT", "/auth/login", {"POST"}),
        ("TRACE", f"{BASE}/{cid}", {"DELETE"}),
        ("PATCH", BASE, {"GET", "POST"}),
    ]:
        response = await client.open(path, method=method, headers=headers)
        assert response.status_code == 405, (method, path)
        allow = {m.strip() for m in response.headers["Allow"].split(",")}
        assert allowed <= allow, (method, path, allow)
        assert await response.get_json() == {
            "code": "method_not_allowed",
            "detail": "The method is not allowed for the requested URL.",
        }


def sse_items(text: str) -> list[dict[str, str]]:
    """The events of an SSE body, as `{field: value}` (comments and blank blocks left out)."""
    items = []
    for block in text.split("\n\n"):
        fields = {}
        for line in block.splitlines():
            if line and not line.startswith(":"):
                name, _, value = line.partition(":")
                fields[name] = value.removeprefix(" ")
        if fields:
            items.append(fields)
    return items


def stream_validators(document: dict[str, Any], path: str) -> tuple[Any, Any]:
    """Validators for an event stream's items and for the JSON in their `data`."""
    ok = document["paths"][path]["get"]["responses"]["200"]
    item = ok["content"]["text/event-stream"]["itemSchema"]
    data = item["properties"]["data"]
    assert data["contentMediaType"] == "application/json"
    root = {"components": document["components"]}
    return (
        Draft202012Validator(item),
        Draft202012Validator({**data["contentSchema"], **root}),
    )


async def test_event_streams_match_their_documented_items(
    client: Client, register: Register
) -> None:
    document = await document_of(client)
    headers = auth(await register())
    cid = await conversation(client, headers)
    items, events = stream_validators(document, BASE + "/{conversation_id}/stream")
    with anyio.fail_after(10):
        response = await client.get(
            f"{BASE}/{cid}/stream",
            query_string={"message": "how do I reset my password"},
            headers=headers,
        )
        text = await response.get_data(as_text=True)
    seen = set()
    for item in sse_items(text):
        items.validate(item)
        event = json.loads(item["data"])
        events.validate(event)
        seen.add(event["type"])
    assert {"message", "chunk", "complete"} <= seen
    # A `reset` (no id) is documented too, and an unknown type is not.
    events.validate({"type": "reset", "conversation_id": cid, "reason": "unknown_position"})
    assert not events.is_valid({"type": "bogus", "conversation_id": cid})
    assert not events.is_valid({"type": "chunk", "conversation_id": cid})
    union = document["components"]["schemas"]["StreamEvent"]
    assert union["discriminator"]["propertyName"] == "type"
    assert set(union["discriminator"]["mapping"]) == {
        "message",
        "chunk",
        "tool_call",
        "tool_result",
        "complete",
        "cancelled",
        "error",
        "conversation_updated",
        "conversation_deleted",
        "reset",
    }


@pytest.fixture(name="slow_app")
async def fixture_slow_app(tmp_path: Path, database_url: str) -> AsyncIterator[Quart]:
    """The app with a reading pace that would make a 40-token reply take 20 s."""
    settings = make_settings(tmp_path, database_url, assistant_token_delay_ms=500)
    async with running_services(settings) as services:
        app = create_app(services)
        async with app.test_app():
            yield app


async def test_a_synchronous_reply_does_not_wait_on_the_reading_pace(slow_app: Quart) -> None:
    client = slow_app.test_client()
    body = {"email": "pace@example.com", "password": "correct horse"}
    await client.post("/auth/register", json=body)
    token = (await (await client.post("/auth/login", json=body)).get_json())["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    cid = await conversation(client, headers)
    started = time.monotonic()
    with anyio.fail_after(10):
        response = await client.post(
            f"{BASE}/{cid}/messages",
            json={"message": "how do I reset my password"},
            headers=headers,
        )
    assert response.status_code == 201
    reply = await response.get_json()
    assert reply["status"] == "complete" and len(reply["content"].split()) > 10
    assert time.monotonic() - started < 2.0
