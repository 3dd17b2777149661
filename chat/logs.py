"""Log records as text or JSON lines, each with the id of the request it belongs to.

The request id lives in a context variable set by chat/access.py for the whole request, so
every record logged while serving it (a rate-limit rejection, an error) carries the id the
client got back in `X-Request-ID`. Records carry no message text, passwords or tokens: the
code logs ids and codes, and the access line logs the path without its query string.
"""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any


@dataclass
class RequestInfo:
    """What is known of the request being served (its route once Quart has matched it)."""

    id: str
    route: str | None = None
    websocket: bool = False


CURRENT: ContextVar[RequestInfo | None] = ContextVar("parley_request", default=None)
# The request id goes at the end, and only on records of a request: every other line reads as
# it always did (operators' and tests' patterns keep matching).
TEXT_FORMAT = "%(asctime)s [%(process)d] %(levelname)s %(name)s: %(message)s%(request)s"
# `extra=` keys of the access line, put into JSON lines as fields of their own.
ACCESS_FIELDS = ("method", "path", "route", "status", "duration_ms", "client")


class RequestIdFilter(logging.Filter):
    """Adds `request_id` ("-" outside a request) to every record, and `request`, the text
    line's ending: " request=<id>" in a request, nothing outside."""

    def filter(self, record: logging.LogRecord) -> bool:
        info = CURRENT.get()
        record.request_id = info.id if info is not None else "-"
        record.request = f" request={info.id}" if info is not None else ""
        return True


class JSONFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, request id, pid, and the
    access line's own fields; an exception's trace as `exc_info`."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", "-"),
            "pid": record.process,
        }
        for name in ACCESS_FIELDS:
            if hasattr(record, name):
                line[name] = getattr(record, name)
        if record.exc_info:
            line["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(line, separators=(",", ":"), default=str)


def configure_logging(level: str, format: str = "text") -> None:
    """Records to stderr, as text lines or JSON lines (`LOG_FORMAT`), with the request id."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RequestIdFilter())
    if format == "json":
        handler.setFormatter(JSONFormatter())
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
