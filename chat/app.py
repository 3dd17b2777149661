"""The Quart app factory: routes, schemas, errors. Services come in from the composition root."""

from __future__ import annotations

from quart import Quart
from quart_schema import QuartSchema
from quart_schema.openapi import HttpSecurityScheme, Info

from chat.blueprints import auth, conversations, docs, health, streams
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
    for module in (health, auth, conversations, streams, docs, ws):
        app.register_blueprint(module.blueprint)
    register_error_handlers(app)
    app.extensions[EXTENSION] = services
    return app
