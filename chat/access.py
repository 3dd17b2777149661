"""Every request: a request id, one log line, and (with metrics on) its count and latency.

An ASGI middleware around the Quart app, so it sees WebSocket handshakes and event streams
as well as ordinary answers, and the status Hypercorn sends. The request id is the client's
`X-Request-ID` when it is sane (1–128 characters of `A-Za-z0-9._:-`), a new one otherwise,
and goes back in the answer's `X-Request-ID`. The route template comes from Quart's matched
rule (`note_route`, a before-request hook): labels never carry raw paths or ids.

The line is logged when the request is over (for a stream, when it closed), with the path
but never the query string: a WebSocket's `?token=` must not reach a log. Hypercorn's own
access log is off in hypercorn.toml, so there is one line per request.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from typing import Any

from quart import request, websocket

from chat.logs import CURRENT, RequestInfo
from chat.metrics import Metrics

log = logging.getLogger("parley.access")

REQUEST_ID = re.compile(rb"[A-Za-z0-9._:\-]{1,128}")
HEADER = b"x-request-id"
UNMATCHED = "<unmatched>"
# A client may send any token as its method: anything else is one label value, so that no
# client can make new series.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
Scope = dict[str, Any]
Message = dict[str, Any]


def request_id(scope: Scope) -> str:
    for name, value in scope.get("headers", ()):
        if name == HEADER and REQUEST_ID.fullmatch(value):
            return str(value.decode("ascii"))
    return uuid.uuid4().hex


async def note_route() -> None:
    """Quart before-request/websocket hook: the matched rule's template, for labels."""
    info = CURRENT.get()
    if info is not None:
        rule = (websocket if info.websocket else request).url_rule
        info.route = rule.rule if rule is not None else UNMATCHED


class Access:
    """The ASGI middleware (`app.asgi_app = Access(app.asgi_app, metrics)`)."""

    def __init__(self, app: Any, metrics: Metrics | None) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        rid = request_id(scope)
        info = RequestInfo(rid, websocket=kind == "websocket")
        token = CURRENT.set(info)
        started = time.perf_counter()
        status = 0
        metrics = self.metrics
        method = scope.get("method", "") if kind == "http" else "WS"
        if kind == "http" and method not in METHODS:
            method = "OTHER"

        async def send_with_id(message: Message) -> None:
            nonlocal status
            type = message["type"]
            if type == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), (HEADER, rid.encode())]
                if metrics is not None:
                    route = _route(info)
                    metrics.request(method, route, status, time.perf_counter() - started)
            elif type == "websocket.accept":
                status = 101
                message["headers"] = [*message.get("headers", ()), (HEADER, rid.encode())]
            elif type in ("websocket.close", "websocket.http.response.start") and not status:
                # Refused before `accept()`: Hypercorn answers the handshake with 403.
                status = message.get("status", 403)
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            if kind == "websocket" and metrics is not None:
                metrics.request(method, _route(info), status or 500, None)
            if log.isEnabledFor(logging.INFO):
                _log_line(scope, info, method, status, time.perf_counter() - started)
            CURRENT.reset(token)


def _route(info: RequestInfo) -> str:
    return info.route or UNMATCHED


def _log_line(scope: Scope, info: RequestInfo, method: str, status: int, seconds: float) -> None:
    client = scope.get("client")
    address = client[0] if client else "-"
    path = scope.get("path", "")
    duration_ms = round(seconds * 1000, 2)
    log.info(
        '%s "%s %s" %s %sms',
        address,
        method,
        path,
        status or "-",
        duration_ms,
        extra={
            "method": method,
            "path": path,
            "route": _route(info),
            "status": status,
            "duration_ms": duration_ms,
            "client": address,
        },
    )
