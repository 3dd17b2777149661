"""The OpenAPI document: quart-schema's, made to say everything the routes really answer.

quart-schema documents what the decorators declare. On top of that, this provider documents
what follows from the route itself: the bearer guard's 401 and 403, a body's 413 and 422, a
query's 422, a path id's 404, that a declared body is required, that a path id is a UUID, and
event streams the way OpenAPI 3.2 describes `text/event-stream` (`itemSchema`).

The document stays "openapi": "3.1.0": the Swagger UI that `/docs` serves (5.31) refuses to
render 3.2.0. Schemathesis and OpenAPI 3.2 tools read `itemSchema` all the same.
"""

from __future__ import annotations

from collections.abc import Callable
from http import HTTPStatus
from typing import Any, TypeVar

from pydantic import TypeAdapter
from quart_schema.openapi import OpenAPIProvider
from quart_schema.typing import Model
from werkzeug.routing.converters import BaseConverter, UUIDConverter
from werkzeug.routing.rules import Rule

from chat.schemas import Error, EventStream, StreamEvent

F = TypeVar("F", bound=Callable[..., Any])
REF = "#/components/schemas/{model}"
HEADERS_ATTRIBUTE = "_parley_headers"
EMPTY_ATTRIBUTE = "_parley_empty_responses"


def document_headers(*parameters: dict[str, Any]) -> Callable[[F], F]:
    """Document request headers a route reads itself (OpenAPI parameter objects, `in: header`)."""

    def decorate(func: F) -> F:
        setattr(func, HEADERS_ATTRIBUTE, [*getattr(func, HEADERS_ATTRIBUTE, []), *parameters])
        return func

    return decorate


def document_empty(status: int) -> Callable[[F], F]:
    """Document an answer without a body (such as 204)."""

    def decorate(func: F) -> F:
        setattr(func, EMPTY_ATTRIBUTE, [*getattr(func, EMPTY_ATTRIBUTE, []), status])
        return func

    return decorate


def _sse_media_type() -> tuple[dict[str, Any], dict[str, Any]]:
    """`text/event-stream` as OpenAPI 3.2 writes it: each event's fields, `data` holding JSON."""
    schema = TypeAdapter(StreamEvent).json_schema(ref_template=REF, mode="serialization")
    definitions = schema.pop("$defs", {})
    definitions["StreamEvent"] = schema
    item = {
        "type": "object",
        "properties": {
            "id": {
                "type": "string",
                "pattern": r"^[^:\s]+:[0-9]+$",
                "description": "`<epoch>:<seq>`; the `Last-Event-ID` to resume from",
            },
            "data": {
                "type": "string",
                "contentMediaType": "application/json",
                "contentSchema": {"$ref": REF.format(model="StreamEvent")},
            },
            "event": {"type": "string", "description": "never sent: every event is a message"},
            "retry": {"type": "integer", "minimum": 0, "description": "never sent"},
        },
        "required": ["data"],
    }
    return {"itemSchema": item}, definitions


def _error_response(status: int) -> dict[str, Any]:
    return {
        "description": HTTPStatus(status).phrase,
        "content": {"application/json": {"schema": {"$ref": REF.format(model="Error")}}},
    }


class ParleyOpenAPIProvider(OpenAPIProvider):
    """quart-schema's document, with each operation's implied answers and headers added."""

    def schema(self) -> dict[str, Any]:
        document = super().schema()
        components = document["components"]["schemas"]
        error = TypeAdapter(Error).json_schema(ref_template=REF)
        components.setdefault("Error", error)
        return document

    def build_paths(self, rule: Rule) -> tuple[dict[str, Any], dict[str, Any]]:
        paths, components = super().build_paths(rule)
        func = self._app.view_functions[rule.endpoint]
        for path_object in paths.values():
            for operation in path_object.values():
                self._complete(operation, rule, func)
        return paths, components

    def _complete(self, operation: dict[str, Any], rule: Rule, func: Any) -> None:
        responses: dict[int | str, Any] = operation["responses"]
        implied: list[int] = []
        if operation.get("security"):
            # The bearer guard: a missing or bad token, or a deactivated account.
            implied += [401, 403]
        if "requestBody" in operation:
            operation["requestBody"]["required"] = True
            implied += [413, 422]
        if any(p["in"] == "query" for p in operation["parameters"]):
            implied.append(422)
        if rule._converters:
            # An unknown, deleted or another user's resource, and an id that is not a UUID.
            implied.append(404)
        for status in implied:
            if status not in responses and str(status) not in responses:
                responses[status] = _error_response(status)
        for status in getattr(func, EMPTY_ATTRIBUTE, []):
            responses[status] = {"description": HTTPStatus(status).phrase}
        for key, response in responses.items():
            if not response.get("description"):
                response["description"] = HTTPStatus(int(key)).phrase
        operation["parameters"] = [
            *operation["parameters"],
            *getattr(func, HEADERS_ATTRIBUTE, []),
        ]

    def build_path_parameter(self, name: str, converter: BaseConverter) -> dict[str, Any]:
        parameter = super().build_path_parameter(name, converter)
        if isinstance(converter, UUIDConverter):
            parameter["schema"] = {"type": "string", "format": "uuid"}
        return parameter

    def build_querystring_parameters(
        self, model: type[Model]
    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        parameters, definitions = super().build_querystring_parameters(model)
        # quart-schema looks for `required` in each property; pydantic lists it on the model.
        required = set(TypeAdapter(model).json_schema().get("required", []))
        for parameter in parameters:
            if parameter["name"] in required:
                parameter["required"] = True
        return parameters, definitions

    def build_response_object(
        self, model: type[Model], headers_model: type[Model] | None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        if isinstance(model, type) and issubclass(model, EventStream):
            media_type, definitions = _sse_media_type()
            response = {
                "description": model.__doc__ or "",
                "content": {EventStream.media_type: media_type},
            }
            return response, definitions
        return super().build_response_object(model, headers_model)
