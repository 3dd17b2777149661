"""Register, login, me, and every way a bearer token can be refused."""

from __future__ import annotations

import time
import uuid

import pytest
from quart.typing import TestClientProtocol as Client

from chat.services import Services
from storage.users import update_user_active
from tests.conftest import SECRET, Register, auth
from tests.tokens import claims, sign, unsigned

pytestmark = pytest.mark.anyio


async def test_register_login_me(client: Client) -> None:
    body = {"email": "Ann@Example.com", "password": "s3cret-pass", "display_name": "Ann"}
    response = await client.post("/auth/register", json=body)
    assert response.status_code == 201
    user = await response.get_json()
    assert user["email"] == "ann@example.com"
    assert user["display_name"] == "Ann"
    assert user["is_active"] is True
    assert user["created_at"].endswith("+00:00")
    assert "password" not in str(user) and "hash" not in str(user)

    response = await client.post(
        "/auth/login", json={"email": "ann@example.com", "password": "s3cret-pass"}
    )
    assert response.status_code == 200
    token = await response.get_json()
    assert token["token_type"] == "bearer"
    assert token["expires_in"] == 3600

    response = await client.get(
        "/auth/me", headers={"Authorization": f"Bearer {token['access_token']}"}
    )
    assert response.status_code == 200
    assert await response.get_json() == user


async def test_register_twice_is_a_conflict(client: Client) -> None:
    body = {"email": "bob@example.com", "password": "password-1"}
    assert (await client.post("/auth/register", json=body)).status_code == 201
    body["email"] = "BOB@example.com"
    response = await client.post("/auth/register", json=body)
    assert response.status_code == 409
    assert (await response.get_json())["code"] == "conflict"


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"email": "not-an-email", "password": "password-1"},
        {"email": "a@b.io", "password": "short"},
        {"email": "a@b.io", "password": "x" * 129},
        {"email": "a@b.io", "password": 12345678},
        {"email": "a@b.io", "password": "password-1", "is_admin": True},
        {"email": "a@b.io", "password": "password-1", "display_name": "x" * 101},
    ],
)
async def test_register_rejects_bad_bodies(client: Client, body: object) -> None:
    response = await client.post("/auth/register", json=body)
    assert response.status_code == 422
    error = await response.get_json()
    assert error["code"] == "validation_error"
    assert isinstance(error["detail"], list)
    # Nothing was stored: the same email can still register.
    ok = await client.post("/auth/register", json={"email": "a@b.io", "password": "password-1"})
    assert ok.status_code == 201


async def test_malformed_json_is_422(client: Client) -> None:
    response = await client.post(
        "/auth/register", data="{not json", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422
    assert (await response.get_json())["code"] == "validation_error"


async def test_login_failures_look_the_same(client: Client, register: Register) -> None:
    await register(email="carl@example.com", password="right-password")
    wrong = await client.post(
        "/auth/login", json={"email": "carl@example.com", "password": "wrong-password"}
    )
    unknown = await client.post(
        "/auth/login", json={"email": "nobody@example.com", "password": "wrong-password"}
    )
    assert wrong.status_code == unknown.status_code == 401
    assert await wrong.get_json() == await unknown.get_json()
    assert wrong.headers["WWW-Authenticate"] == "Bearer"


async def test_inactive_user_gets_403(
    client: Client, register: Register, services: Services
) -> None:
    headers = await register(email="dora@example.com", password="password-1")
    await update_user_active(services.db, uuid.UUID(headers["user_id"]), is_active=False)
    response = await client.get("/auth/me", headers=auth(headers))
    assert response.status_code == 403
    assert (await response.get_json())["code"] == "inactive_user"
    login = await client.post(
        "/auth/login", json={"email": "dora@example.com", "password": "password-1"}
    )
    assert login.status_code == 403


def bad_tokens(user_id: str) -> dict[str, str]:
    good = claims(user_id)
    at = int(time.time())
    valid = sign({"alg": "HS256", "typ": "JWT"}, good, SECRET)
    head, _, signature = valid.split(".")
    tampered_body = sign({"alg": "HS256"}, claims(str(uuid.uuid4())), SECRET).split(".")[1]
    return {
        "garbage": "not-a-jwt",
        "alg none": unsigned("none", good),
        "alg None": unsigned("None", good),
        "alg NONE": unsigned("NONE", good),
        "alg nOnE": unsigned("nOnE", good),
        "wrong key": sign({"alg": "HS256"}, good, "another-secret-" + "y" * 40),
        "tampered payload": f"{head}.{tampered_body}.{signature}",
        "expired": sign({"alg": "HS256"}, claims(user_id, iat=at - 100, exp=at - 10), SECRET),
        "missing exp": sign({"alg": "HS256"}, claims(user_id, exp=None), SECRET),
        "missing sub": sign({"alg": "HS256"}, claims(user_id, sub=None), SECRET),
        "wrong iss": sign({"alg": "HS256"}, claims(user_id, iss="evil"), SECRET),
        "wrong aud": sign({"alg": "HS256"}, claims(user_id, aud="other-api"), SECRET),
        "other alg": sign({"alg": "HS512"}, good, SECRET),
        "unknown user": sign({"alg": "HS256"}, claims(str(uuid.uuid4())), SECRET),
        "sub not a uuid": sign({"alg": "HS256"}, claims("admin"), SECRET),
    }


async def test_bad_tokens_are_401(client: Client, register: Register) -> None:
    headers = await register()
    # The hand-made signer itself is right: a correct token passes.
    good = sign({"alg": "HS256", "typ": "JWT"}, claims(headers["user_id"]), SECRET)
    assert (
        await client.get("/auth/me", headers={"Authorization": f"Bearer {good}"})
    ).status_code == 200
    for name, token in bad_tokens(headers["user_id"]).items():
        response = await client.get("/auth/me", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 401, name
        assert response.headers["WWW-Authenticate"] == "Bearer", name
        assert (await response.get_json())["code"] == "not_authenticated", name
    for header in ["", "Bearer", "Bearer ", "Basic abc", f"Token {good}"]:
        response = await client.get("/auth/me", headers={"Authorization": header})
        assert response.status_code == 401, header
    assert (await client.get("/auth/me")).status_code == 401


async def test_registration_can_be_turned_off(tmp_path: object, database_url: str) -> None:
    from pathlib import Path

    from chat.app import create_app
    from chat.root import running_services
    from tests.conftest import make_settings

    assert isinstance(tmp_path, Path)
    settings = make_settings(tmp_path, database_url, registration_enabled="false")
    async with running_services(settings) as services:
        app = create_app(services)
        async with app.test_app():
            response = await app.test_client().post(
                "/auth/register", json={"email": "e@example.com", "password": "password-1"}
            )
    assert response.status_code == 403


@pytest.mark.parametrize(("cache_s", "after"), [("0", 403), ("60", 200)])
async def test_deactivation_applies_within_the_auth_cache(
    tmp_path: object, database_url: str, cache_s: str, after: int
) -> None:
    from pathlib import Path

    from chat.app import create_app
    from chat.root import running_services
    from tests.conftest import make_settings

    assert isinstance(tmp_path, Path)
    settings = make_settings(tmp_path, database_url, auth_cache_s=cache_s)
    async with running_services(settings) as services:
        app = create_app(services)
        async with app.test_app():
            client = app.test_client()
            body = {"email": "cached@example.com", "password": "password-1"}
            user = await (await client.post("/auth/register", json=body)).get_json()
            token = (await (await client.post("/auth/login", json=body)).get_json())["access_token"]
            headers = {"Authorization": f"Bearer {token}"}
            assert (await client.get("/auth/me", headers=headers)).status_code == 200
            await update_user_active(services.db, uuid.UUID(user["id"]), is_active=False)
            assert (await client.get("/auth/me", headers=headers)).status_code == after
