"""The OpenAPI document describes every route with its security and answers."""

from __future__ import annotations

from typing import Any

import pytest
from quart.typing import TestClientProtocol as Client

pytestmark = pytest.mark.anyio

BASE = "/api/v1/chat/conversations"
E = "Error"
# path -> method -> status -> the schema documented for that answer
# Every status each route really answers (a bearer-guarded route: 401 and 403 inactive_user).
EXPECTED: dict[str, dict[str, dict[str, str]]] = {
    "/auth/register": {
        "post": {"201": "UserResponse", "403": E, "409": E, "413": E, "422": E, "429": E}
    },
    "/auth/login": {"post": {"200": "Token", "401": E, "403": E, "413": E, "422": E, "429": E}},
    "/auth/me": {"get": {"200": "UserResponse", "401": E, "403": E}},
    BASE: {
        "get": {"200": "Conversations", "401": E, "403": E, "422": E},
        "post": {"201": "ConversationResponse", "401": E, "403": E, "413": E, "422": E},
    },
    BASE + "/{conversation_id}/messages": {
        "get": {"200": "Messages", "401": E, "403": E, "404": E, "422": E},
        "post": {
            "201": "MessageResponse",
            "202": "MessageResponse",
            "401": E,
            "403": E,
            "404": E,
            "413": E,
            "422": E,
            "429": E,
            "503": E,
        },
    },
    BASE + "/{conversation_id}/stream": {"get": {"401": E, "403": E, "404": E, "422": E, "503": E}},
    BASE + "/{conversation_id}/events": {"get": {"401": E, "403": E, "404": E}},
    BASE + "/{conversation_id}/cancel": {
        "post": {"202": "CancelResult", "401": E, "403": E, "404": E}
    },
    BASE + "/{conversation_id}/title": {
        "patch": {"200": "ConversationResponse", "401": E, "403": E, "404": E, "413": E, "422": E}
    },
    BASE + "/{conversation_id}": {"delete": {"401": E, "403": E, "404": E}},
    "/api/v1/tickets": {"get": {"200": "Tickets", "401": E, "403": E, "422": E}},
    "/api/v1/tickets/{ticket_id}": {"get": {"200": "TicketDetail", "401": E, "403": E, "404": E}},
    "/api/v1/tools": {"get": {"200": "ToolServers", "401": E, "403": E}},
    "/healthz": {"get": {"200": "Health"}},
    "/readyz": {"get": {"200": "Health", "503": "Health"}},
}
# Answers without a body.
EMPTY = {(BASE + "/{conversation_id}", "delete"): {"204"}}
STREAMS = {BASE + "/{conversation_id}/stream", BASE + "/{conversation_id}/events"}


def schema_name(document: dict[str, Any], schema: dict[str, Any]) -> str:
    """quart-schema inlines some models and refers to others; both carry the model's name."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[1]
        assert name in document["components"]["schemas"]
        return str(name)
    return str(schema["title"])


PUBLIC = {"/auth/register", "/auth/login", "/healthz", "/readyz"}


@pytest.fixture(name="document")
async def fixture_document(client: Client) -> dict[str, Any]:
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    document: dict[str, Any] = await response.get_json()
    return document


async def test_every_route_is_documented(document: dict[str, Any]) -> None:
    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    for path, methods in EXPECTED.items():
        assert path in document["paths"], path
        for method, statuses in methods.items():
            operation = document["paths"][path][method]
            assert operation.get("summary"), (path, method)
            for status, model in statuses.items():
                content = operation["responses"][status]["content"]["application/json"]
                assert schema_name(document, content["schema"]) == model, (path, method, status)
            empty = EMPTY.get((path, method), set())
            for status in empty:
                assert "content" not in operation["responses"][status], (path, method, status)
            # Nothing answered that is not listed, and nothing listed that is not answered.
            streamed = {"200"} if path in STREAMS else set()
            assert set(operation["responses"]) == set(statuses) | empty | streamed, (path, method)
            security = operation.get("security")
            if path in PUBLIC:
                assert not security, (path, method)
            else:
                assert security == [{"bearer": []}], (path, method)


async def test_bodies_and_errors_have_schemas(document: dict[str, Any]) -> None:
    me = document["paths"]["/auth/me"]["get"]["responses"]
    error = me["401"]["content"]["application/json"]["schema"]
    assert set(error["properties"]) == {"detail", "code"}
    user = me["200"]["content"]["application/json"]["schema"]
    assert user["properties"]["created_at"]["format"] == "date-time"
    post_message = document["paths"][BASE + "/{conversation_id}/messages"]["post"]
    body = post_message["requestBody"]["content"]["application/json"]["schema"]
    assert schema_name(document, body) == "MessageData"
    assert body["properties"]["message"]["maxLength"] == 10_000
    limit = next(p for p in document["paths"][BASE]["get"]["parameters"] if p["name"] == "limit")
    assert limit["schema"]["maximum"] == 100


async def test_docs_page(client: Client) -> None:
    response = await client.get("/docs")
    assert response.status_code == 200
    assert "openapi.json" in await response.get_data(as_text=True)
