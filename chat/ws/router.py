"""Frames to handlers: one table per protocol, so a new protocol is a new handler set.

The router reads a frame, checks it against the handler's frame model and calls the handler;
whatever goes wrong becomes an `error` frame (through the one error table of `chat/errors.py`)
and the socket carries on.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from chat.errors import describe
from chat.ws import frames
from chat.ws.socket import ChatSocket

log = logging.getLogger(__name__)

F = TypeVar("F", bound=frames.ClientFrame)


@dataclass(frozen=True)
class Handler(Generic[F]):
    """A frame model and the coroutine that answers it."""

    model: type[F]
    handle: Callable[[ChatSocket, F], Awaitable[None]]

    async def __call__(self, socket: ChatSocket, body: dict[str, Any]) -> None:
        await self.handle(socket, self.model.model_validate(body))


class Router:
    """Dispatches a socket's frames through one protocol's table of handlers."""

    def __init__(self, handlers: Mapping[str, Handler[Any]]) -> None:
        self._handlers = dict(handlers)

    async def dispatch(self, socket: ChatSocket, data: str | bytes) -> None:
        """Handle one frame; a bad one gets an `error` frame, never a closed socket."""
        if isinstance(data, bytes):
            socket.push(frames.error("invalid_frame", "frames are JSON text, not binary"))
            return
        try:
            body = json.loads(data)
        except (ValueError, RecursionError):  # `[[[[…` nested deeper than the parser goes
            socket.push(frames.error("invalid_frame", "the frame is not valid JSON"))
            return
        if not isinstance(body, dict):
            socket.push(frames.error("invalid_frame", "a frame is a JSON object"))
            return
        request_id = body.get("request_id")
        if not isinstance(request_id, str | int) or isinstance(request_id, bool):
            request_id = None
        kind = body.get("type")
        handler = self._handlers.get(kind) if isinstance(kind, str) else None
        if handler is None:
            known = ", ".join(sorted(self._handlers))
            detail = f"unknown frame type {kind!r}; known: {known}"
            socket.push(frames.error("unknown_type", detail, request_id))
            return
        try:
            await handler(socket, body)
        except Exception as failure:
            socket.push(self._error(failure, request_id))

    @staticmethod
    def _error(failure: Exception, request_id: frames.RequestId) -> str:
        described = describe(failure)
        if described is None:
            log.exception("a WebSocket handler failed")
            return frames.error("internal_error", "internal server error", request_id)
        _, code, detail = described
        return frames.error(code, detail, request_id)
