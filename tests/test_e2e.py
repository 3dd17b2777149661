"""The README's first command end to end: migrate, demo user, serve; then the curl walk-through."""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx
import pytest

from tests.server import parley, running_server, server_env


@pytest.fixture(name="env")
def fixture_env(tmp_path: Path) -> dict[str, str]:
    return server_env(tmp_path)


def test_walkthrough_over_http(tmp_path: Path, env: dict[str, str]) -> None:
    assert "latest revision" in parley("migrate", env=env).stdout
    created = parley("create-user", "--demo", env=env).stdout
    password = re.search(r"with password (\S+)", created)
    assert password, created
    again = parley("create-user", "--demo", env=env).stdout
    assert "already exists" in again and password.group(1) not in again

    with (
        running_server(env, tmp_path / "server.log") as server,
        httpx.Client(base_url=server.url, timeout=10) as http,
    ):
        demo = http.post(
            "/auth/login", json={"email": "demo@parley.local", "password": password.group(1)}
        )
        assert demo.status_code == 200

        assert (
            http.post(
                "/auth/register", json={"email": "walk@example.com", "password": "walkthrough"}
            ).status_code
            == 201
        )
        login = http.post(
            "/auth/login", json={"email": "walk@example.com", "password": "walkthrough"}
        )
        token = login.json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        base = "/api/v1/chat/conversations"

        created_conversation = http.post(base, json={"title": "Walk"}, headers=headers)
        assert created_conversation.status_code == 201
        cid = created_conversation.json()["id"]
        listed = http.get(base, headers=headers).json()
        assert [c["id"] for c in listed["items"]] == [cid]
        posted = http.post(
            f"{base}/{cid}/messages",
            json={"message": "How do I reset my password?"},
            headers=headers | {"Prefer": "respond-async"},
        )
        assert posted.status_code == 202
        assert posted.json()["content"] == "How do I reset my password?"
        renamed = http.patch(f"{base}/{cid}/title", json={"title": "Passwords"}, headers=headers)
        assert renamed.json()["title"] == "Passwords"
        assert http.delete(f"{base}/{cid}", headers=headers).status_code == 204
        assert http.get(f"{base}/{cid}/messages", headers=headers).status_code == 404
        # A token in a query string must not reach the access log.
        http.get(f"/healthz?token={token}")
        assert http.get("/readyz").json()["checks"] == {"database": "ok", "schema": "ok"}

        started = time.monotonic()
        assert server.stop() == 0
        assert time.monotonic() - started < 15
    log = server.log_text()
    assert "GET /healthz" in log
    assert token not in log
    assert "Traceback" not in log
