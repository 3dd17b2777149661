"""Rate limits in one process (the Quart test app): sign-in throttles that refuse before any
hashing, the client address behind trusted proxies, concurrent replies, the request id."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from prometheus_client.parser import text_string_to_metric_families
from quart.typing import TestClientProtocol as Client

from chat.app import create_app
from chat.root import running_services
from chat.services import Services
from chat.throttle import client_address, trusted_networks
from tests import databases
from tests.actors.scripted import ScriptedProvider
from tests.conftest import make_settings

pytestmark = pytest.mark.anyio
BASE = "/api/v1/chat/conversations"
WAIT_S = 10


@asynccontextmanager
async def serving(
    tmp_path: Path, sqlite_template: Path, provider: ScriptedProvider | None = None, **env: str
) -> AsyncIterator[tuple[Client, Services]]:
    """An app on a fresh SQLite database with metrics on and these settings."""
    url = databases.sqlite_copy(sqlite_template, tmp_path)
    settings = make_settings(tmp_path, url, **({"metrics_enabled": "true"} | env))
    async with running_services(settings, provider=provider) as services:
        app = create_app(services)
        async with app.test_app():
            yield app.test_client(), services


async def samples(client: Client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """`/metrics`, parsed by prometheus_client's own parser: (name, labels) -> value."""
    response = await client.get("/metrics")
    assert response.status_code == 200
    text = (await response.get_data()).decode()
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(found: dict[Any, float], name: str, **labels: str) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


async def register(client: Client, email: str, password: str = "right-password") -> None:
    body = {"email": email, "password": password}
    assert (await client.post("/auth/register", json=body)).status_code == 201


async def login(client: Client, email: str, password: str, **headers: str) -> Any:
    # From a loopback peer (the test client's own is "<local>", not an address).
    return await client.post(
        "/auth/login",
        json={"email": email, "password": password},
        headers=headers,
        scope_base={"client": ("127.0.0.1", 40000)},
    )


async def test_brute_force_is_refused_before_the_hash(
    tmp_path: Path, sqlite_template: Path
) -> None:
    async with serving(tmp_path, sqlite_template) as (client, _):
        await register(client, "ann@example.com")
        await register(client, "bob@example.com")
        before = await samples(client)
        statuses = []
        retry_after = []
        for _ in range(20):
            response = await login(client, "ann@example.com", "wrong-password")
            statuses.append(response.status_code)
            if response.status_code == 429:
                body = await response.get_json()
                assert body["code"] == "rate_limited"
                retry_after.append(int(response.headers["Retry-After"]))
        after = await samples(client)
        # Refused before the 20th, and every attempt after the first refusal refused too.
        first = statuses.index(429)
        assert first < 19
        assert set(statuses[:first]) == {401} and set(statuses[first:]) == {429}
        assert all(1 <= seconds <= 60 for seconds in retry_after)
        # Only the attempts that were checked computed a hash; the refused ones none.
        hashes = value(after, "parley_password_hashes_total") - value(
            before, "parley_password_hashes_total"
        )
        assert hashes == first
        assert value(after, "parley_rate_limited_total", limit="auth_email") == 20 - first
        # Another user, from the same address, still signs in; so does Ann's right password
        # not: her email is over its limit whatever the password.
        assert (await login(client, "bob@example.com", "right-password")).status_code == 200
        assert (await login(client, "ann@example.com", "right-password")).status_code == 429


async def test_an_address_is_limited_and_forwarded_for_is_not_believed(
    tmp_path: Path, sqlite_template: Path
) -> None:
    limits = {"auth_rate_per_address": "3/minute", "auth_rate_per_email": ""}
    async with serving(tmp_path, sqlite_template, **limits) as (client, _):
        statuses = [
            (
                await login(client, f"u{i}@example.com", "x", **{"X-Forwarded-For": f"10.0.0.{i}"})
            ).status_code
            for i in range(5)
        ]
        # A client cannot pick a new address per attempt: no proxy is trusted.
        assert statuses == [401, 401, 401, 429, 429]


async def test_behind_a_trusted_proxy_each_client_has_its_own_budget(
    tmp_path: Path, sqlite_template: Path
) -> None:
    limits = {
        "auth_rate_per_address": "2/minute",
        "auth_rate_per_email": "",
        "trusted_proxies": "127.0.0.1, ::1",
    }
    async with serving(tmp_path, sqlite_template, **limits) as (client, _):

        async def attempt(forwarded: str) -> int:
            response = await login(client, "x@example.com", "x", **{"X-Forwarded-For": forwarded})
            return int(response.status_code)

        assert [await attempt("203.0.113.7") for _ in range(3)] == [401, 401, 429]
        # Another client behind the same proxy; a spoofed left part does not change who it is.
        assert await attempt("198.51.100.1") == 401
        assert await attempt("203.0.113.7, 198.51.100.1") == 401
        assert await attempt("203.0.113.7, 198.51.100.1") == 429


def test_client_address() -> None:
    proxies = trusted_networks(["10.0.0.0/8"])
    assert client_address("10.1.2.3", "198.51.100.4", proxies) == "198.51.100.4"
    assert client_address("10.1.2.3", "1.2.3.4, 198.51.100.4, 10.9.9.9", proxies) == (
        "198.51.100.4"
    )
    # Not from the proxy: the header is the client's own invention.
    assert client_address("192.0.2.1", "198.51.100.4", proxies) == "192.0.2.1"
    assert client_address("10.1.2.3", "not-an-address", proxies) == "10.1.2.3"
    assert client_address("10.1.2.3", None, proxies) == "10.1.2.3"
    assert client_address("192.0.2.1", "198.51.100.4", ()) == "192.0.2.1"


async def test_concurrent_replies_per_user(tmp_path: Path, sqlite_template: Path) -> None:
    provider = ScriptedProvider()
    env = {"user_concurrent_replies": "1"}
    async with serving(tmp_path, sqlite_template, provider, **env) as (client, services):
        me, other = (
            await signed_in(client, "carl@example.com"),
            await signed_in(client, "dora@example.com"),
        )
        first, second = await conversation(client, me), await conversation(client, me)
        later = {"Prefer": "respond-async"}
        held = await post(client, me, first, "pause here please", later)
        assert held.status_code == 202
        with anyio.fail_after(WAIT_S):
            await provider.paused.wait()
        refused = await post(client, me, second, "and this?", later)
        assert refused.status_code == 429
        assert (await refused.get_json())["code"] == "rate_limited"
        assert refused.headers["Retry-After"] == "1"
        # Another user is not affected.
        assert (
            await post(client, other, await conversation(client, other), "hi")
        ).status_code == 201
        # The slot comes back when the reply ends, whether or not anyone waited for it: the
        # reply's last event (`conversation_updated`, after `complete`) is published in the
        # same step that ends it.
        with services.hub.subscribe(uuid.UUID(first)) as events:
            provider.release.set()
            seen: list[str] = []
            with anyio.fail_after(WAIT_S):
                while "complete" not in seen or seen[-1] != "conversation_updated":
                    event = await events.receive()
                    assert event is not None
                    seen.append(event.type)
        assert (await post(client, me, second, "now?")).status_code == 201


async def test_request_id_is_returned_and_a_bad_one_replaced(
    tmp_path: Path, sqlite_template: Path
) -> None:
    async with serving(tmp_path, sqlite_template) as (client, _):
        response = await client.get("/healthz", headers={"X-Request-ID": "abc-123.x"})
        assert response.headers["X-Request-ID"] == "abc-123.x"
        response = await client.get("/healthz", headers={"X-Request-ID": "bad id\twith spaces"})
        assert len(response.headers["X-Request-ID"]) == 32
        response = await client.get("/healthz")
        assert len(response.headers["X-Request-ID"]) == 32


async def signed_in(client: Client, email: str) -> dict[str, str]:
    await register(client, email)
    token = (await (await login(client, email, "right-password")).get_json())["access_token"]
    return {"Authorization": f"Bearer {token}"}


async def conversation(client: Client, me: dict[str, str]) -> str:
    return str((await (await client.post(BASE, json={}, headers=me)).get_json())["id"])


async def post(
    client: Client, me: dict[str, str], cid: str, text: str, headers: dict[str, str] | None = None
) -> Any:
    return await client.post(
        f"{BASE}/{cid}/messages", json={"message": text}, headers=me | (headers or {})
    )
