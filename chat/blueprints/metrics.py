"""`/metrics` in Prometheus text format: on the main listener (`METRICS_ENABLED=true`) or on a
listener of its own (`METRICS_BIND=host:port`, served by `serve_metrics` from the composition
root). Off by default: the figures tell an outsider how busy the service is."""

from __future__ import annotations

import logging
from typing import Any

import anyio
from hypercorn.asyncio.run import worker_serve
from hypercorn.config import Config
from hypercorn.utils import wrap_app
from prometheus_client import generate_latest
from quart import Blueprint, Response
from quart_schema import hide

from chat.metrics import CONTENT_TYPE, Metrics
from chat.services import services

log = logging.getLogger(__name__)
blueprint = Blueprint("metrics", __name__)
# The metrics listener has no long requests: its stop is quick, well inside the shutdown budget.
METRICS_GRACE_S = 1.0


@blueprint.get("/metrics")
@hide
async def get_metrics() -> Response:
    """Prometheus metrics."""
    metrics = services().metrics
    assert metrics is not None  # registered only with metrics on (chat/app.py)
    return Response(generate_latest(metrics.registry), content_type=CONTENT_TYPE)


def metrics_app(metrics: Metrics) -> Any:
    """A bare ASGI app answering `GET /metrics` (and 404 to anything else)."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        found = scope["path"] == "/metrics" and scope["method"] in ("GET", "HEAD")
        body = generate_latest(metrics.registry) if found else b"not found\n"
        content_type = CONTENT_TYPE if found else "text/plain"
        await send(
            {
                "type": "http.response.start",
                "status": 200 if found else 404,
                "headers": [(b"content-type", content_type.encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})

    return app


async def serve_metrics(metrics: Metrics, bind: str, stop: anyio.Event) -> None:
    """Serve `/metrics` on `bind` until `stop` (the main server's own stop)."""
    config = Config()
    config.bind = [bind]
    config.accesslog = None
    config.graceful_timeout = METRICS_GRACE_S
    sockets = config.create_sockets()
    log.info("serving metrics on %s", bind)
    app = wrap_app(metrics_app(metrics), config.wsgi_max_body_size, "asgi")
    await worker_serve(app, config, sockets=sockets, shutdown_trigger=stop.wait)
