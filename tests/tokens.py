"""Hand-made JWTs for the token tests: every way a token can be wrong."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from typing import Any


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def sign(header: dict[str, Any], claims: dict[str, Any], secret: str) -> str:
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    signature = hmac.new(secret.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


def claims(user_id: str, **overrides: Any) -> dict[str, Any]:
    at = int(time.time())
    values: dict[str, Any] = {
        "sub": user_id,
        "iat": at,
        "exp": at + 600,
        "iss": "parley",
        "aud": "parley-api",
        "jti": uuid.uuid4().hex,
    }
    values.update(overrides)
    return {k: v for k, v in values.items() if v is not None}


def unsigned(alg: str, body: dict[str, Any]) -> str:
    return (
        f"{b64(json.dumps({'alg': alg, 'typ': 'JWT'}).encode())}.{b64(json.dumps(body).encode())}."
    )
