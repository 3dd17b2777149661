"""Register, log in, and read the signed-in user."""

from __future__ import annotations

from quart import Blueprint, request
from quart_schema import document_response, security_scheme, validate_request

from chat.auth import current_user, require_user
from chat.credentials import inactive, unauthenticated
from chat.errors import APIError
from chat.schemas import Error, LoginData, Token, UserData, UserResponse
from chat.services import services
from chat.views import user_json
from storage.users import insert_user, select_user_by_email

blueprint = Blueprint("auth", __name__, url_prefix="/auth")

JSONDict = dict[str, object]


async def check_attempt(email: str) -> None:
    """Count a sign-in or registration attempt; 429 past its limits, before any hashing."""
    throttle = services().throttle
    if throttle is not None:
        address = throttle.client(request.remote_addr, request.headers.get("X-Forwarded-For"))
        await throttle.check_sign_in(address, email)


@blueprint.post("/register")
@validate_request(UserData)
@document_response(UserResponse, 201)
@document_response(Error, 403)
@document_response(Error, 409)
@document_response(Error, 422)
@document_response(Error, 429)
async def post_register(data: UserData) -> tuple[JSONDict, int]:
    """Create an account.

    Answers 409 if the email is already registered, 403 if registration is turned off, 429
    (with `Retry-After`) past the attempts allowed per client address and per email.
    """
    found = services()
    if not found.settings.registration_enabled:
        raise APIError(403, "registration_closed", "Registration is turned off")
    await check_attempt(data.email)
    user = await insert_user(
        found.db,
        email=data.email,
        password_hash=await found.passwords.hash(data.password),
        display_name=data.display_name,
    )
    return user_json(user), 201


@blueprint.post("/login")
@validate_request(LoginData)
@document_response(Token, 200)
@document_response(Error, 401)
@document_response(Error, 403)
@document_response(Error, 422)
@document_response(Error, 429)
async def post_login(data: LoginData) -> JSONDict:
    """Exchange email and password for a bearer token.

    Answers 429 (with `Retry-After`) past the attempts allowed per client address and per
    email; a refused attempt is not checked at all.
    """
    found = services()
    await check_attempt(data.email)
    user = await select_user_by_email(found.db, data.email)
    ok = await found.passwords.verify(user.password_hash if user else None, data.password)
    if user is None or not ok:
        raise unauthenticated("Incorrect email or password")
    if not user.is_active:
        raise inactive()
    token = found.tokens.issue(user.id)
    return {"access_token": token, "token_type": "bearer", "expires_in": int(found.tokens.ttl_s)}


@blueprint.get("/me")
@security_scheme([{"bearer": []}])
@document_response(UserResponse, 200)
@document_response(Error, 401)
@document_response(Error, 403)
@require_user
async def get_me() -> JSONDict:
    """The signed-in user."""
    return user_json(current_user())
