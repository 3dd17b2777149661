"""The OpenAPI document: quart-schema's, with event streams documented as such."""

from __future__ import annotations

from typing import Any

from quart_schema.openapi import OpenAPIProvider
from quart_schema.typing import Model


class ParleyOpenAPIProvider(OpenAPIProvider):
    """Documents a response under its model's `media_type` (SSE routes), not only JSON."""

    def build_response_object(
        self, model: type[Model], headers_model: type[Model] | None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        response, definitions = super().build_response_object(model, headers_model)
        media_type = getattr(model, "media_type", None)
        if isinstance(media_type, str):
            response["content"] = {media_type: response["content"].pop("application/json")}
        return response, definitions
