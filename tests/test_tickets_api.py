"""`GET /api/v1/tickets` and `GET /api/v1/tickets/{id}`: a user reads their own tickets,
paginated like conversations, and another user's ticket is as missing as one that never was."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from quart.typing import TestClientProtocol as Client

from chat import tickets
from chat.schemas import TicketDetail, Tickets
from chat.services import Services
from tests.conftest import Register, auth

pytestmark = pytest.mark.anyio
BASE = "/api/v1/tickets"


async def open_ticket(services: Services, headers: dict[str, str], subject: str) -> dict[str, Any]:
    return await tickets.open_ticket(
        services.db,
        uuid.UUID(headers["user_id"]),
        None,
        subject=subject,
        description=f"About {subject}",
        priority="high",
    )


async def test_list_pages_newest_first_with_status_filter(
    client: Client, register: Register, services: Services
) -> None:
    me = await register()
    other = await register()
    mine = [await open_ticket(services, me, f"Mine {i}") for i in range(3)]
    await open_ticket(services, other, "Theirs")

    response = await client.get(BASE, query_string={"limit": 2}, headers=auth(me))
    assert response.status_code == 200
    page = await response.get_json()
    Tickets.model_validate(page)
    assert [t["number"] for t in page["items"]] == [3, 2]
    assert (page["total"], page["offset"], page["limit"]) == (3, 0, 2)
    assert page["items"][0] == mine[2]

    response = await client.get(BASE, query_string={"offset": 2}, headers=auth(me))
    assert [t["subject"] for t in (await response.get_json())["items"]] == ["Mine 0"]

    response = await client.get(BASE, query_string={"status": "open"}, headers=auth(me))
    assert (await response.get_json())["total"] == 3
    response = await client.get(BASE, query_string={"status": "closed"}, headers=auth(me))
    assert await response.get_json() == {"items": [], "total": 0, "offset": 0, "limit": 20}


async def test_one_ticket_with_its_comments(
    client: Client, register: Register, services: Services
) -> None:
    me = await register()
    ticket = await open_ticket(services, me, "Refund")
    await tickets.comment_on_ticket(
        services.db, uuid.UUID(me["user_id"]), ticket["id"], body="We are on it", author="assistant"
    )
    response = await client.get(f"{BASE}/{ticket['id']}", headers=auth(me))
    assert response.status_code == 200
    body = await response.get_json()
    TicketDetail.model_validate(body)
    assert body["subject"] == "Refund"
    assert body["priority"] == "high"
    assert body["created_at"].endswith("+00:00")
    assert [(c["author"], c["body"]) for c in body["comments"]] == [("assistant", "We are on it")]


async def test_another_users_ticket_is_not_found_like_a_missing_one(
    client: Client, register: Register, services: Services
) -> None:
    me = await register()
    other = await register()
    theirs = await open_ticket(services, other, "Private")
    answers = []
    for path in (f"{BASE}/{theirs['id']}", f"{BASE}/{uuid.uuid4()}"):
        response = await client.get(path, headers=auth(me))
        answers.append((response.status_code, await response.get_json()))
    assert answers == [(404, {"detail": "Not found", "code": "not_found"})] * 2
    response = await client.get(BASE, headers=auth(me))
    assert (await response.get_json())["total"] == 0


@pytest.mark.parametrize(
    "query",
    [{"status": "lost"}, {"limit": "0"}, {"limit": "101"}, {"offset": "-1"}, {"extra": "1"}],
)
async def test_bad_queries_are_422(
    client: Client, register: Register, query: dict[str, str]
) -> None:
    me = await register()
    response = await client.get(BASE, query_string=query, headers=auth(me))
    assert response.status_code == 422
    assert (await response.get_json())["code"] == "validation_error"


async def test_a_path_that_is_not_a_uuid_is_404(client: Client, register: Register) -> None:
    me = await register()
    response = await client.get(f"{BASE}/12", headers=auth(me))
    assert response.status_code == 404


@pytest.mark.parametrize("path", [BASE, f"{BASE}/{uuid.UUID(int=1)}"])
async def test_without_a_token_it_is_401(client: Client, path: str) -> None:
    response = await client.get(path)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert (await response.get_json())["code"] == "not_authenticated"
