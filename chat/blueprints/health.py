"""Liveness and readiness probes."""

from __future__ import annotations

from typing import Any

from quart import Blueprint
from quart_schema import document_response

from chat.schemas import Health
from chat.services import services

blueprint = Blueprint("health", __name__)


@blueprint.get("/healthz")
@document_response(Health, 200)
async def get_healthz() -> dict[str, Any]:
    """The process is up."""
    return {"status": "ok", "checks": {}}


@blueprint.get("/readyz")
@document_response(Health, 200)
@document_response(Health, 503)
async def get_readyz() -> tuple[dict[str, Any], int]:
    """The process can serve: the database answers (and Redis, when configured)."""
    checks: dict[str, str] = {}
    try:
        await services().db.fetch_val("SELECT 1")
        checks["database"] = "ok"
    except Exception as error:  # any failure means not ready; the reason is for operators
        checks["database"] = f"error: {type(error).__name__}"
    ok = all(v == "ok" for v in checks.values())
    return {"status": "ok" if ok else "unavailable", "checks": checks}, 200 if ok else 503
