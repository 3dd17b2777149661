"""Signing up and starting conversations over HTTP, against any running server (or load
balancer) that has a `url`."""

from __future__ import annotations

import uuid
from typing import Protocol

import httpx

BASE = "/api/v1/chat/conversations"


class HasURL(Protocol):
    url: str


async def sign_up(http: httpx.AsyncClient, server: HasURL) -> tuple[str, dict[str, str]]:
    """A new user's access token and its `Authorization` header."""
    body = {"email": f"user-{uuid.uuid4().hex[:8]}@example.com", "password": "password-1"}
    assert (await http.post(server.url + "/auth/register", json=body)).status_code == 201
    token = (await http.post(server.url + "/auth/login", json=body)).json()["access_token"]
    return token, {"Authorization": f"Bearer {token}"}


async def new_conversation(http: httpx.AsyncClient, server: HasURL, me: dict[str, str]) -> str:
    response = await http.post(server.url + BASE, json={}, headers=me)
    assert response.status_code == 201
    return str(response.json()["id"])
