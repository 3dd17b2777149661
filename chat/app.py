"""The Quart app factory: routes, schemas, errors. Services come in from the composition root."""

from __future__ import annotations

from quart import Quart
from quart_cors import cors
from quart_schema import QuartSchema
from quart_schema.openapi import HttpSecurityScheme, Info

from chat.access import Access, note_route
from chat.blueprints import (
    auth,
    conversations,
    docs,
    health,
    metrics,
    streams,
    tickets,
    tools,
    web,
)
from chat.errors import register_error_handlers
from chat.openapi import ParleyOpenAPIProvider
from chat.services import EXTENSION, Services
from chat.version import package_version
from chat.ws import endpoint as ws

SECONDS = 1


def create_app(services: Services) -> Quart:
    app = Quart("chat")
    settings = services.settings
    app.config.update(
        MAX_CONTENT_LENGTH=settings.max_request_bytes,
        BODY_TIMEOUT=30 * SECONDS,
        # Ordinary answers are quick; streams switch their own timeout off.
        RESPONSE_TIMEOUT=60 * SECONDS,
        QUART_SCHEMA_PYDANTIC_DUMP_OPTIONS={"mode": "json"},
        # /docs loads Swagger UI from Parley itself, so it works offline.
        **docs.SWAGGER_CONFIG,
    )
    QuartSchema(
        app,
        openapi_path="/openapi.json",
        swagger_ui_path="/docs",
        redoc_ui_path=None,
        scalar_ui_path=None,
        info=Info(
            title="Parley", version=package_version(), description="AI customer-support chat API"
        ),
        security_schemes={"bearer": HttpSecurityScheme(scheme="bearer", bearer_format="JWT")},
        openapi_provider_class=ParleyOpenAPIProvider,
    )
    for module in (health, auth, conversations, tickets, tools, streams, docs, ws, web):
        app.register_blueprint(module.blueprint)
    if settings.cors_origin_list:
        allow_cors(app, settings.cors_origin_list)
    if settings.metrics_enabled and not settings.metrics_bind:
        app.register_blueprint(metrics.blueprint)
    # A request id, one log line and the request metrics for every request (chat/access.py).
    app.before_request(note_route)
    app.before_websocket(note_route)
    app.asgi_app = Access(app.asgi_app, services.metrics)  # type: ignore[method-assign, assignment]
    register_error_handlers(app)
    app.extensions[EXTENSION] = services
    return app


def allow_cors(app: Quart, origins: list[str]) -> None:
    """CORS headers for pages of these origins (`CORS_ORIGINS`), so a client embedded on
    another site can call the API with a bearer token. No credentials (cookies): the API
    uses none. The WebSocket is exempt from quart-cors' origin check (chat/ws/endpoint.py)."""
    cors(
        app,
        allow_origin=origins,
        allow_methods=["GET", "POST", "PATCH", "DELETE"],
        allow_headers=[
            "Authorization",
            "Content-Type",
            "Idempotency-Key",
            "Prefer",
            "Last-Event-ID",
        ],
        expose_headers=["Retry-After", "WWW-Authenticate"],
        max_age=600,
    )
