"""Swagger UI's files for /docs, served from the swagger-ui-bundle package: no CDN needed."""

from __future__ import annotations

from pathlib import Path

from quart import Blueprint, Response, send_from_directory
from quart_schema import hide
from swagger_ui_bundle import swagger_ui_path  # type: ignore[import-untyped]

blueprint = Blueprint("docs", __name__)

ASSETS = Path(str(swagger_ui_path))
STATIC = "/docs/static"
# What quart-schema's /docs page loads (its QUART_SCHEMA_SWAGGER_* settings).
SWAGGER_CONFIG = {
    "QUART_SCHEMA_SWAGGER_JS_URL": f"{STATIC}/swagger-ui-bundle.js",
    "QUART_SCHEMA_SWAGGER_CSS_URL": f"{STATIC}/swagger-ui.css",
}


@blueprint.get(f"{STATIC}/<path:filename>")
@hide
async def get_docs_asset(filename: str) -> Response:
    """One of Swagger UI's files (scripts, styles, icons)."""
    return await send_from_directory(ASSETS, filename)
