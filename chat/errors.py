"""The one table that turns errors into HTTP answers `{"detail", "code"}`."""

from __future__ import annotations

import logging
from typing import Any

from pydantic import ValidationError
from quart import Quart, Request, Response, jsonify
from quart_schema import RequestSchemaValidationError
from werkzeug.exceptions import BadRequest, HTTPException

from actors.errors import ActorUnavailable, ConversationGone
from storage.errors import Conflict, NotFound

log = logging.getLogger(__name__)

CODES = {
    400: "validation_error",
    401: "not_authenticated",
    403: "inactive_user",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    422: "validation_error",
    429: "rate_limited",
    503: "unavailable",
}


class APIError(Exception):
    """An answer with a status, a stable code and a readable detail."""

    def __init__(
        self, status: int, code: str, detail: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.headers = headers


def not_found() -> APIError:
    return APIError(404, "not_found", "Not found")


def error_response(
    status: int,
    code: str,
    detail: str | list[dict[str, Any]],
    headers: dict[str, str] | None = None,
) -> Response:
    response = jsonify(detail=detail, code=code)
    response.status_code = status
    if status == 401:
        response.headers["WWW-Authenticate"] = "Bearer"
    response.headers.update(headers or {})
    return response


def _field_errors(error: Exception) -> list[dict[str, Any]]:
    if isinstance(error, ValidationError):
        # Only location, message and type: the input itself may hold a password.
        return [
            {"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]}
            for e in error.errors(include_url=False)
        ]
    return [{"loc": [], "msg": str(error) or "invalid request", "type": "value_error"}]


class UTF8Request(Request):
    """A request whose JSON body, if not UTF-8, is a bad request rather than a crash.

    Quart decodes the body before its JSON error handling starts, so the `UnicodeDecodeError`
    escaped as a 500.
    """

    async def get_json(self, force: bool = False, silent: bool = False, cache: bool = True) -> Any:
        try:
            return await super().get_json(force=force, silent=silent, cache=cache)
        except UnicodeDecodeError:
            if silent:
                return None
            raise BadRequest("the body is not valid UTF-8") from None


def describe(error: Exception) -> tuple[int, str, str | list[dict[str, Any]]] | None:
    """The status, code and detail of an error a client may see, or `None` for a bug.

    The one mapping of our errors for every door: the HTTP handlers below and the WebSocket's
    `error` frames (`chat/ws/`) both read it.
    """
    if isinstance(error, APIError):
        return error.status, error.code, error.detail
    if isinstance(error, (NotFound, ConversationGone)):
        return 404, "not_found", "Not found"
    if isinstance(error, Conflict):
        return 409, "conflict", str(error)
    if isinstance(error, ActorUnavailable):
        return 503, "unavailable", str(error)
    if isinstance(error, ValidationError):
        return 422, "validation_error", _field_errors(error)
    return None


def register_error_handlers(app: Quart) -> None:
    """Map every error to the contract's answer (and read bodies with `UTF8Request`)."""
    app.request_class = UTF8Request

    @app.errorhandler(APIError)
    @app.errorhandler(NotFound)
    @app.errorhandler(ConversationGone)
    @app.errorhandler(Conflict)
    @app.errorhandler(ActorUnavailable)
    async def handle_known(error: Exception) -> Response:
        described = describe(error)
        assert described is not None
        status, code, detail = described
        headers = error.headers if isinstance(error, APIError) else None
        if status == 503:
            headers = {"Retry-After": "1"} | (headers or {})
        return error_response(status, code, detail, headers)

    @app.errorhandler(RequestSchemaValidationError)
    async def handle_validation(error: RequestSchemaValidationError) -> Response:
        return error_response(422, "validation_error", _field_errors(error.validation_error))

    @app.errorhandler(HTTPException)
    async def handle_http(error: HTTPException) -> Response:
        status = error.code or 500
        if status == 400:
            # Malformed JSON and other unreadable bodies are validation errors in our contract.
            detail: str | list[dict[str, Any]] = [
                {"loc": ["body"], "msg": "the body is not valid JSON", "type": "json_invalid"}
            ]
            return error_response(422, "validation_error", detail)
        code = CODES.get(status, "error")
        # Keep what the exception says about the answer, such as 405's `Allow` (RFC 9110).
        headers = {k: v for k, v in error.get_headers() if k.lower() != "content-type"}
        return error_response(status, code, error.description or error.name, headers)

    @app.errorhandler(Exception)
    async def handle_unexpected(error: Exception) -> Response:
        # The client learns nothing of the cause; the log has the whole trace.
        log.exception("unhandled error")
        return error_response(500, "internal_error", "Internal server error")
