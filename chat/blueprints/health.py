"""Liveness and readiness probes."""

from __future__ import annotations

import os
from typing import Any

from quart import Blueprint
from quart_schema import document_response

from chat.schemas import Health
from chat.services import services
from chat.settings import Settings
from storage.revision import database_revision, mismatch

blueprint = Blueprint("health", __name__)


@blueprint.get("/healthz")
@document_response(Health, 200)
async def get_healthz() -> dict[str, Any]:
    """The process is up."""
    return {"status": "ok", "checks": {}}


def assistant(settings: Settings) -> dict[str, str]:
    """Which assistant answers, as configured."""
    if settings.assistant_provider == "openai":
        return {"provider": "openai", "model": settings.openai_model}
    return {"provider": settings.assistant_provider}


@blueprint.get("/readyz")
@document_response(Health, 200)
@document_response(Health, 503)
async def get_readyz() -> tuple[dict[str, Any], int]:
    """The process can serve: the database answers and is at the code's schema revision.

    With `REDIS_URL` set, `checks.redis` is `ok` or `degraded` (this instance serves its own
    clients, events do not cross to other instances); degraded is still ready.
    """
    checks: dict[str, str] = {}
    try:
        problem = mismatch(await database_revision(services().db))
        checks["database"] = "ok"
        checks["schema"] = "ok" if problem is None else f"error: {problem}"
    except Exception as error:  # any failure means not ready; the reason is for operators
        checks["database"] = f"error: {type(error).__name__}"
    ok = all(v == "ok" for v in checks.values())
    bridge = services().bridge
    if bridge is not None:
        # Without Redis the instance still serves its own clients: degraded, but ready (200).
        checks["redis"] = bridge.state
    body = {
        "status": "ok" if ok else "unavailable",
        "checks": checks,
        "assistant": assistant(services().settings),
        # Which process answered: one of several with `parley serve --workers`.
        "pid": os.getpid(),
    }
    return body, 200 if ok else 503
