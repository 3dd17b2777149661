"""CORS_ORIGINS: pages of the listed origins may call the REST API; off by default."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from quart.typing import TestClientProtocol as Client

from chat.app import create_app
from chat.root import running_services
from chat.settings import SettingsError, load_settings
from tests import databases
from tests.conftest import make_settings

pytestmark = pytest.mark.anyio

SHOP = "https://shop.example.com"
CONVERSATIONS = "/api/v1/chat/conversations"
PREFLIGHT = {
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "authorization, content-type, idempotency-key",
}


@asynccontextmanager
async def client_for(tmp_path: Path, template: Path, **settings: str) -> AsyncIterator[Client]:
    url = databases.sqlite_copy(template, tmp_path)
    async with running_services(make_settings(tmp_path, url, **settings)) as services:
        app = create_app(services)
        async with app.test_app():
            yield app.test_client()


async def sign_up(client: Client) -> str:
    body = {"email": "cors@example.com", "password": "correct horse"}
    assert (await client.post("/auth/register", json=body)).status_code == 201
    answer = await client.post("/auth/login", json=body)
    token: str = (await answer.get_json())["access_token"]
    return token


async def test_cors_is_off_by_default(tmp_path: Path, sqlite_template: Path) -> None:
    async with client_for(tmp_path, sqlite_template) as client:
        preflight = await client.options(CONVERSATIONS, headers={"Origin": SHOP, **PREFLIGHT})
        assert "Access-Control-Allow-Origin" not in preflight.headers
        assert "Access-Control-Allow-Methods" not in preflight.headers
        token = await sign_up(client)
        answer = await client.get(
            CONVERSATIONS, headers={"Origin": SHOP, "Authorization": f"Bearer {token}"}
        )
        assert answer.status_code == 200
        assert "Access-Control-Allow-Origin" not in answer.headers


async def test_a_listed_origin_passes_the_preflight_and_reads_answers(
    tmp_path: Path, sqlite_template: Path
) -> None:
    origins = f"{SHOP}, http://localhost:3000"
    async with client_for(tmp_path, sqlite_template, cors_origins=origins) as client:
        preflight = await client.options(CONVERSATIONS, headers={"Origin": SHOP, **PREFLIGHT})
        assert preflight.status_code == 200
        assert preflight.headers["Access-Control-Allow-Origin"] == SHOP
        assert {"POST", "GET", "PATCH", "DELETE"} <= set(
            preflight.headers["Access-Control-Allow-Methods"].split(", ")
        )
        allowed = {h.lower() for h in preflight.headers["Access-Control-Allow-Headers"].split(", ")}
        assert allowed == {"authorization", "content-type", "idempotency-key"}
        assert preflight.headers["Access-Control-Max-Age"] == "600"
        assert "Access-Control-Allow-Credentials" not in preflight.headers
        # The answers themselves, errors included, are readable by the page.
        refused = await client.get(CONVERSATIONS, headers={"Origin": SHOP})
        assert refused.status_code == 401
        assert refused.headers["Access-Control-Allow-Origin"] == SHOP
        token = await sign_up(client)
        created = await client.post(
            CONVERSATIONS,
            json={"title": "From the shop"},
            headers={"Origin": SHOP, "Authorization": f"Bearer {token}"},
        )
        assert created.status_code == 201
        assert created.headers["Access-Control-Allow-Origin"] == SHOP
        assert "Origin" in created.headers["Vary"]
        # Another origin gets no CORS headers: its browser will not let it read the answer.
        other = await client.options(
            CONVERSATIONS, headers={"Origin": "https://evil.example.com", **PREFLIGHT}
        )
        assert "Access-Control-Allow-Origin" not in other.headers
        # The socket authenticates by token, not by origin: any origin (or none) may connect.
        for headers in ({"Origin": "https://evil.example.com"}, {}):
            async with client.websocket(f"/ws/chat?token={token}", headers=headers) as socket:
                await socket.send(json.dumps({"type": "ping", "request_id": 1}))
                assert json.loads(await socket.receive()) == {"type": "pong", "request_id": 1}


@pytest.mark.parametrize(
    "value", ["shop.example.com", "https://shop.example.com/path", "ftp://x.org", "https://"]
)
def test_an_origin_that_is_not_one_stops_the_start(value: str, tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="invalid setting CORS_ORIGINS"):
        load_settings({"PARLEY_VAR_DIR": str(tmp_path), "CORS_ORIGINS": value})


def test_origins_are_a_comma_separated_list(tmp_path: Path) -> None:
    environ = {"PARLEY_VAR_DIR": str(tmp_path), "CORS_ORIGINS": f" {SHOP} ,http://[::1]:8080,"}
    settings = load_settings(environ)
    assert settings.cors_origin_list == [SHOP, "http://[::1]:8080"]
    assert load_settings({"PARLEY_VAR_DIR": str(tmp_path)}).cors_origin_list == []
