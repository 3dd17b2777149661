"""Who a tool call acts for, passed out of band to Parley's MCP server.

The model chooses a tool's arguments, so the acting user can never be one of them: the tool
service adds a short-lived signed token to the `_meta` of every `tools/call` request, and the
server verifies it. The token is signed with a secret derived from the JWT secret (HMAC with a
fixed label), so an acting token is never a valid API token and the JWT secret itself never
reaches a subprocess.
"""

from __future__ import annotations

import hashlib
import hmac
import time
import uuid
from dataclasses import dataclass
from functools import lru_cache

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import OctKey

ACTING_USER_META_KEY = "parley/acting_user"
TOOLS_SECRET_ENV = "PARLEY_TOOLS_SECRET"

ALGORITHM = "HS256"
ISSUER = "parley"
AUDIENCE = "parley-mcp"
_LABEL = b"parley-mcp-acting-user-v1"


class InvalidActingToken(Exception):
    """The acting token is missing, malformed, expired, or not signed by this deployment."""


@dataclass(frozen=True)
class ActingUser:
    user_id: uuid.UUID
    conversation_id: uuid.UUID


def derive_tools_secret(jwt_secret: str) -> str:
    """The secret shared with tool servers: HMAC-SHA256 of the JWT secret, hex."""
    return hmac.new(jwt_secret.encode(), _LABEL, hashlib.sha256).hexdigest()


@lru_cache(maxsize=8)
def _key(secret: str) -> OctKey:
    return OctKey.import_key(secret)


_CLAIMS = jwt.JWTClaimsRegistry(
    iss={"essential": True, "value": ISSUER},
    aud={"essential": True, "value": AUDIENCE},
    sub={"essential": True},
    cid={"essential": True},
    exp={"essential": True},
    iat={"essential": True},
    jti={"essential": True},
)


def issue_acting_token(
    secret: str, user_id: uuid.UUID, conversation_id: uuid.UUID, ttl_s: float = 120
) -> str:
    at = int(time.time())
    claims = {
        "sub": str(user_id),
        "cid": str(conversation_id),
        "iat": at,
        "exp": at + max(1, int(ttl_s)),
        "iss": ISSUER,
        "aud": AUDIENCE,
        "jti": uuid.uuid4().hex,
    }
    return jwt.encode({"alg": ALGORITHM, "typ": "JWT"}, claims, _key(secret))


def verify_acting_token(secret: str, token: str) -> ActingUser:
    """The user and conversation a valid token acts for; `InvalidActingToken` otherwise."""
    if not isinstance(token, str) or not token:
        raise InvalidActingToken("missing acting token")
    try:
        decoded = jwt.decode(token, _key(secret), algorithms=[ALGORITHM])
        _CLAIMS.validate(decoded.claims)
        return ActingUser(
            user_id=uuid.UUID(str(decoded.claims["sub"])),
            conversation_id=uuid.UUID(str(decoded.claims["cid"])),
        )
    except (JoseError, ValueError, TypeError) as error:
        raise InvalidActingToken(f"invalid acting token: {error}") from error
