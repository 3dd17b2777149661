"""Routes 1–6: conversations and messages over HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from typing import Any

import anyio
import pytest
from quart.typing import TestClientProtocol as Client

from chat.schemas import ConversationResponse, Conversations, MessageResponse, Messages
from chat.services import Services
from storage.conversations import purge_deleted_conversations, select_conversation
from storage.messages import insert_message, select_messages
from tests.conftest import Register, auth
from tests.test_auth import bad_tokens

pytestmark = pytest.mark.anyio
BASE = "/api/v1/chat/conversations"

# Every route of a conversation, with a valid body: the walk for 401/404 checks.
ROUTES: list[tuple[str, str, dict[str, Any] | None]] = [
    ("GET", BASE + "/{id}/messages", None),
    ("POST", BASE + "/{id}/messages", {"message": "hello"}),
    ("PATCH", BASE + "/{id}/title", {"title": "renamed"}),
    ("DELETE", BASE + "/{id}", None),
]


async def create(client: Client, headers: dict[str, str], **body: Any) -> dict[str, Any]:
    response = await client.post(BASE, json=body, headers=auth(headers))
    assert response.status_code == 201, await response.get_data(as_text=True)
    conversation: dict[str, Any] = await response.get_json()
    ConversationResponse.model_validate(conversation)
    return conversation


async def post(client: Client, headers: dict[str, str], cid: str, text: str, **kw: Any) -> Any:
    return await client.post(
        f"{BASE}/{cid}/messages", json={"message": text}, headers=auth(headers) | kw
    )


async def test_create_and_list(client: Client, register: Register) -> None:
    me = await register()
    first = await create(client, me)
    assert first["title"] == "New conversation"
    assert first["total_messages"] == 0
    assert first["created_at"].endswith("+00:00")
    second = await create(client, me, title="Billing question")
    assert second["title"] == "Billing question"

    response = await client.get(BASE, headers=auth(me))
    assert response.status_code == 200
    page = await response.get_json()
    Conversations.model_validate(page)
    assert [c["id"] for c in page["items"]] == [second["id"], first["id"]]
    assert (page["total"], page["offset"], page["limit"]) == (2, 0, 20)


async def test_list_pagination_edges(client: Client, register: Register) -> None:
    me = await register()
    ids = [(await create(client, me, title=f"c{i}"))["id"] for i in range(5)]
    page = await (await client.get(BASE + "?offset=1&limit=2", headers=auth(me))).get_json()
    assert [c["id"] for c in page["items"]] == [ids[3], ids[2]]
    past = await (await client.get(BASE + "?offset=50", headers=auth(me))).get_json()
    assert past == {"items": [], "total": 5, "offset": 50, "limit": 20}
    full = await (await client.get(BASE + "?limit=100", headers=auth(me))).get_json()
    assert len(full["items"]) == 5
    for query in ["limit=0", "limit=101", "offset=-1", "limit=abc", "offset=1.5", "colour=red"]:
        response = await client.get(f"{BASE}?{query}", headers=auth(me))
        assert response.status_code == 422, query
        assert (await response.get_json())["code"] == "validation_error"


async def test_post_and_list_messages(client: Client, register: Register) -> None:
    me = await register()
    cid = (await create(client, me))["id"]
    for i in range(3):
        response = await post(client, me, cid, f"How do I reset my password? ({i})")
        assert response.status_code == 201
        reply = await response.get_json()
        MessageResponse.model_validate(reply)
        assert reply["role"] == "assistant"
        assert reply["status"] == "complete"
        assert reply["entity_references"][0]["id"] == "reset-password"

    response = await client.get(f"{BASE}/{cid}/messages", headers=auth(me))
    page = await response.get_json()
    Messages.model_validate(page)
    assert [m["role"] for m in page["items"]] == ["user", "assistant"] * 3
    assert page["items"][0]["content"] == "How do I reset my password? (0)"
    assert page["total"] == 6

    listed = await (await client.get(BASE, headers=auth(me))).get_json()
    assert listed["items"][0]["total_messages"] == 6
    # The first question named the conversation.
    assert listed["items"][0]["title"] == "How do I reset my password? (0)"


async def test_respond_async_answers_202_with_the_user_message(
    client: Client, register: Register
) -> None:
    me = await register()
    cid = (await create(client, me))["id"]
    response = await post(client, me, cid, "where is my parcel", Prefer="respond-async")
    assert response.status_code == 202
    message = await response.get_json()
    MessageResponse.model_validate(message)
    assert (message["role"], message["content"], message["status"]) == (
        "user",
        "where is my parcel",
        "complete",
    )


async def test_messages_pagination_edges(client: Client, register: Register) -> None:
    me = await register()
    cid = (await create(client, me))["id"]
    for i in range(3):
        assert (await post(client, me, cid, f"m{i}")).status_code == 201
    url = f"{BASE}/{cid}/messages"
    page = await (await client.get(url + "?offset=1&limit=2", headers=auth(me))).get_json()
    assert len(page["items"]) == 2
    total = page["total"]
    past = await (await client.get(url + f"?offset={total + 10}", headers=auth(me))).get_json()
    assert past == {"items": [], "total": total, "offset": total + 10, "limit": 50}
    for query in ["limit=0", "limit=201", "offset=-1", "limit=x", "extra=1"]:
        response = await client.get(f"{url}?{query}", headers=auth(me))
        assert response.status_code == 422, query
    empty = await create(client, me)
    page = await (await client.get(f"{BASE}/{empty['id']}/messages", headers=auth(me))).get_json()
    assert page == {"items": [], "total": 0, "offset": 0, "limit": 50}


@pytest.mark.parametrize(
    ("method", "suffix", "body"),
    [
        ("POST", "", {"title": "x" * 501}),
        ("POST", "", {"title": 5}),
        ("POST", "", {"title": "ok", "pinned": True}),
        ("POST", "", ["not", "an", "object"]),
        ("POST", "/{id}/messages", {}),
        ("POST", "/{id}/messages", {"message": ""}),
        ("POST", "/{id}/messages", {"message": "   "}),
        ("POST", "/{id}/messages", {"message": "x" * 10_001}),
        ("POST", "/{id}/messages", {"message": 42}),
        ("POST", "/{id}/messages", {"message": "hi", "role": "assistant"}),
        ("PATCH", "/{id}/title", {}),
        ("PATCH", "/{id}/title", {"title": ""}),
        ("PATCH", "/{id}/title", {"title": "x" * 501}),
        ("PATCH", "/{id}/title", {"title": None}),
    ],
)
async def test_invalid_bodies_are_422_and_change_nothing(
    client: Client, register: Register, method: str, suffix: str, body: Any
) -> None:
    me = await register()
    conversation = await create(client, me, title="Original")
    path = BASE + suffix.format(id=conversation["id"])
    response = await client.open(path, method=method, json=body, headers=auth(me))
    assert response.status_code == 422
    error = await response.get_json()
    assert error["code"] == "validation_error"
    assert isinstance(error["detail"], list) and error["detail"]
    listed = await (await client.get(BASE, headers=auth(me))).get_json()
    assert listed["total"] == 1
    assert listed["items"][0]["title"] == "Original"
    assert listed["items"][0]["total_messages"] == 0


async def test_malformed_and_empty_bodies_are_422(client: Client, register: Register) -> None:
    me = await register()
    cid = (await create(client, me))["id"]
    for raw in ["{", "", "null", '{"message": "unterminated}']:
        response = await client.post(
            f"{BASE}/{cid}/messages",
            data=raw,
            headers=auth(me) | {"Content-Type": "application/json"},
        )
        assert response.status_code == 422, raw
        assert (await response.get_json())["code"] == "validation_error"


async def test_too_large_body_is_413(client: Client, register: Register) -> None:
    me = await register()
    cid = (await create(client, me))["id"]
    response = await post(client, me, cid, "x" * (2 * 1024 * 1024))
    assert response.status_code == 413
    assert (await response.get_json())["code"] == "too_large"


async def test_rename(client: Client, register: Register) -> None:
    me = await register()
    cid = (await create(client, me))["id"]
    response = await client.patch(
        f"{BASE}/{cid}/title", json={"title": "  Shipping  "}, headers=auth(me)
    )
    assert response.status_code == 200
    renamed = await response.get_json()
    assert renamed["title"] == "Shipping"
    ConversationResponse.model_validate(renamed)


async def test_delete_hides_it_everywhere(
    client: Client, register: Register, services: Services
) -> None:
    me = await register()
    cid = (await create(client, me))["id"]
    await post(client, me, cid, "hello", Prefer="respond-async")
    response = await client.delete(f"{BASE}/{cid}", headers=auth(me))
    assert response.status_code == 204
    for method, path, body in ROUTES:
        response = await client.open(
            path.format(id=cid), method=method, json=body, headers=auth(me)
        )
        assert response.status_code == 404, (method, path)
        assert (await response.get_json()) == {"detail": "Not found", "code": "not_found"}
    assert (await (await client.get(BASE, headers=auth(me))).get_json())["total"] == 0


async def test_sweeper_purges_past_retention_only(
    services: Services, register: Register, client: Client
) -> None:
    me = await register()
    user_id = uuid.UUID(me["user_id"])
    kept = await create(client, me)
    gone = await create(client, me)
    await post(client, me, gone["id"], "to be purged", Prefer="respond-async")
    for conversation in (kept, gone):
        await client.delete(f"{BASE}/{conversation['id']}", headers=auth(me))
    # Age one deletion past its retention.
    await services.db.execute(
        "UPDATE conversations SET retention_days = 0 WHERE id = :id",
        {"id": uuid.UUID(gone["id"]).hex if "sqlite" in str(services.db.url) else gone["id"]},
    )
    assert await purge_deleted_conversations(services.db) == 1
    remaining = await services.db.fetch_all("SELECT id FROM conversations")
    assert len(remaining) == 1
    orphans = await services.db.fetch_val("SELECT count(*) FROM messages")
    assert orphans == 0
    assert await select_conversation(services.db, user_id, uuid.UUID(kept["id"])) is None


async def test_another_users_conversation_is_404_on_every_route(
    client: Client, register: Register
) -> None:
    owner, intruder = await register(), await register()
    cid = (await create(client, owner, title="Private"))["id"]
    await post(client, owner, cid, "secret", Prefer="respond-async")
    for method, path, body in ROUTES:
        response = await client.open(
            path.format(id=cid), method=method, json=body, headers=auth(intruder)
        )
        assert response.status_code == 404, (method, path)
        assert (await response.get_json())["code"] == "not_found"
    for path in [BASE + "/not-a-uuid/messages", f"{BASE}/{uuid.uuid4()}/messages"]:
        assert (await client.get(path, headers=auth(owner))).status_code == 404
    # The owner's conversation is untouched.
    page = await (await client.get(BASE, headers=auth(owner))).get_json()
    assert page["items"][0]["title"] == "Private"
    assert (await (await client.get(BASE, headers=auth(intruder))).get_json())["total"] == 0


async def test_every_route_refuses_every_bad_token(client: Client, register: Register) -> None:
    me = await register()
    cid = (await create(client, me))["id"]
    routes = [*ROUTES, ("GET", BASE, None), ("POST", BASE, {})]
    bad = [{}, *({"Authorization": f"Bearer {t}"} for t in bad_tokens(me["user_id"]).values())]
    for method, path, body in routes:
        for headers in bad:
            response = await client.open(
                path.format(id=cid), method=method, json=body, headers=headers
            )
            assert response.status_code == 401, (method, path, headers)
            assert response.headers["WWW-Authenticate"] == "Bearer"


async def test_idempotency_key_stores_one_message(client: Client, register: Register) -> None:
    me = await register()
    cid = (await create(client, me))["id"]
    key = {"Idempotency-Key": "retry-1", "Prefer": "respond-async"}
    first = await (await post(client, me, cid, "pay", **key)).get_json()
    second = await (await post(client, me, cid, "pay", **key)).get_json()
    assert first == second
    user_messages = [
        m
        for m in (await (await client.get(f"{BASE}/{cid}/messages", headers=auth(me))).get_json())[
            "items"
        ]
        if m["role"] == "user"
    ]
    assert len(user_messages) == 1
    bad = await post(client, me, cid, "pay", **{"Idempotency-Key": "k" * 201})
    assert bad.status_code == 422


async def test_concurrent_posts_get_consecutive_seq(
    client: Client, register: Register, services: Services
) -> None:
    me = await register()
    cid = (await create(client, me))["id"]
    statuses: list[int] = []

    async def send(i: int) -> None:
        response = await post(client, me, cid, f"burst {i}")
        statuses.append(response.status_code)

    async with anyio.create_task_group() as tg:
        for i in range(50):
            tg.start_soon(send, i)
    assert statuses == [201] * 50
    page = await select_messages(
        services.db, uuid.UUID(me["user_id"]), uuid.UUID(cid), offset=0, limit=200
    )
    assert page is not None
    items, total = page
    assert total == 100
    assert [m.seq for m in items] == list(range(1, 101))
    # One reply at a time: every question is followed by its answer.
    assert [m.role for m in items] == ["user", "assistant"] * 50
    assert sorted(m.content for m in items if m.role == "user") == sorted(
        f"burst {i}" for i in range(50)
    )
    listed = await (await client.get(BASE, headers=auth(me))).get_json()
    assert listed["items"][0]["total_messages"] == 100


async def test_concurrent_inserts_draw_distinct_seq(
    services: Services, register: Register, client: Client
) -> None:
    """The storage allocation itself is race-free, without the actor serialising writers."""
    me = await register()
    user_id = uuid.UUID(me["user_id"])
    cid = uuid.UUID((await create(client, me))["id"])

    async def insert(i: int) -> None:
        await insert_message(
            services.db, user_id=user_id, conversation_id=cid, role="user", content=f"m{i}"
        )

    async with anyio.create_task_group() as tg:
        for i in range(50):
            tg.start_soon(insert, i)
    page = await select_messages(services.db, user_id, cid, offset=0, limit=200)
    assert page is not None
    items, total = page
    assert total == 50
    assert [m.seq for m in items] == list(range(1, 51))
    assert len({m.content for m in items}) == 50


async def test_concurrent_retries_with_one_key_store_one(
    client: Client, register: Register
) -> None:
    me = await register()
    cid = (await create(client, me))["id"]
    answers: list[dict[str, Any]] = []

    async def send() -> None:
        response = await post(
            client, me, cid, "once", **{"Idempotency-Key": "same", "Prefer": "respond-async"}
        )
        assert response.status_code == 202
        answers.append(await response.get_json())

    async with anyio.create_task_group() as tg:
        for _ in range(10):
            tg.start_soon(send)
    assert len({a["id"] for a in answers}) == 1
    page = await (await client.get(f"{BASE}/{cid}/messages", headers=auth(me))).get_json()
    assert [m["content"] for m in page["items"] if m["role"] == "user"] == ["once"]
