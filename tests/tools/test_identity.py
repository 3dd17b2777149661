"""The acting-user token: only a fresh HS256 token of this deployment's tools secret passes."""

from __future__ import annotations

import base64
import json
import time
import uuid
from typing import Any

import pytest
from joserfc import jwt
from joserfc.jwk import OctKey

from chat.tools.identity import (
    ActingUser,
    InvalidActingToken,
    derive_tools_secret,
    issue_acting_token,
    verify_acting_token,
)

JWT_SECRET = "a-jwt-secret-of-the-deployment-" + "x" * 20
SECRET = derive_tools_secret(JWT_SECRET)
USER, CONVERSATION = uuid.uuid4(), uuid.uuid4()


def claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {
        "sub": str(USER),
        "cid": str(CONVERSATION),
        "iat": now,
        "exp": now + 60,
        "iss": "parley",
        "aud": "parley-mcp",
        "jti": uuid.uuid4().hex,
    }
    return {k: v for k, v in (base | changes).items() if v is not None}


def signed(payload: dict[str, Any], alg: str = "HS256", secret: str = SECRET) -> str:
    return jwt.encode({"alg": alg}, payload, OctKey.import_key(secret), algorithms=[alg])


def unsigned(payload: dict[str, Any], alg: str) -> str:
    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{part({'alg': alg, 'typ': 'JWT'})}.{part(payload)}."


def test_a_token_names_its_user_and_conversation() -> None:
    token = issue_acting_token(SECRET, USER, CONVERSATION)
    assert verify_acting_token(SECRET, token) == ActingUser(USER, CONVERSATION)


def test_the_tools_secret_is_not_the_jwt_secret() -> None:
    assert SECRET != JWT_SECRET
    assert JWT_SECRET not in SECRET
    assert derive_tools_secret(JWT_SECRET) == SECRET
    assert derive_tools_secret(JWT_SECRET + "!") != SECRET


@pytest.mark.parametrize(
    "token",
    [
        pytest.param("", id="empty"),
        pytest.param("not.a.token", id="garbage"),
        pytest.param(signed(claims(), secret=JWT_SECRET), id="signed with the JWT secret"),
        pytest.param(signed(claims(exp=int(time.time()) - 1)), id="expired"),
        pytest.param(signed(claims(exp=None)), id="no exp"),
        pytest.param(signed(claims(aud="parley-api")), id="an API token's audience"),
        pytest.param(signed(claims(iss="someone")), id="another issuer"),
        pytest.param(signed(claims(cid=None)), id="no conversation"),
        pytest.param(signed(claims(sub="not-a-uuid")), id="bad subject"),
        pytest.param(signed(claims(), alg="HS384"), id="HS384"),
        *(
            pytest.param(unsigned(claims(), alg), id=f"alg {alg}")
            for alg in ("none", "None", "NONE", "nOnE")
        ),
    ],
)
def test_anything_else_is_refused(token: str) -> None:
    with pytest.raises(InvalidActingToken):
        verify_acting_token(SECRET, token)


def test_a_tampered_payload_is_refused() -> None:
    header, _, signature = issue_acting_token(SECRET, USER, CONVERSATION).split(".")
    other = claims(sub=str(uuid.uuid4()))
    body = base64.urlsafe_b64encode(json.dumps(other).encode()).rstrip(b"=").decode()
    with pytest.raises(InvalidActingToken):
        verify_acting_token(SECRET, f"{header}.{body}.{signature}")
