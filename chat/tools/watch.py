"""Small helpers of the tool service: a read stream that reports its end, readable errors."""

from __future__ import annotations

import re
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Generic, Self, TypeVar

import anyio

if TYPE_CHECKING:
    # Imported where a session starts (see supervisor.py): the SDK is slow to import.
    from mcp.shared._stream_protocols import ReadStream
    from mcp.shared.exceptions import MCPError

T = TypeVar("T")
# What OpenAI-compatible APIs accept as a function name.
TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MAX_ERROR_TEXT = 300
_ENDED = (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError)


def mcp_error() -> type[MCPError]:
    from mcp.shared.exceptions import MCPError

    return MCPError


def is_valid_tool_name(name: str) -> bool:
    return TOOL_NAME.match(name) is not None


class WatchedStream(Generic[T]):
    """The transport's read stream, calling `on_end` once when it ends.

    A stdio server that dies closes its stdout: this is how its owner learns it at once,
    rather than at the next call or health check. No extra hop: it only delegates.
    """

    def __init__(self, inner: ReadStream[T], on_end: Callable[[], None]) -> None:
        self._inner = inner
        self._on_end = on_end
        self._ended = False

    def _end(self) -> None:
        if not self._ended:
            self._ended = True
            self._on_end()

    async def receive(self) -> T:
        try:
            return await self._inner.receive()
        except _ENDED:
            self._end()
            raise

    async def aclose(self) -> None:
        await self._inner.aclose()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> T:
        try:
            return await self.receive()
        except _ENDED:
            raise StopAsyncIteration from None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        await self.aclose()


def _leaf(error: BaseException) -> BaseException:
    """The first error inside (nested) exception groups: the one that says what happened."""
    while isinstance(error, BaseExceptionGroup) and error.exceptions:
        error = error.exceptions[0]
    return error


def describe_error(error: BaseException) -> str:
    """One bounded line saying what went wrong, without a traceback."""
    error = _leaf(error)
    if isinstance(error, mcp_error()):
        text = error.error.message
    elif isinstance(error, FileNotFoundError):
        text = f"command not found: {error.filename or error}"
    elif isinstance(error, OSError) and error.strerror:
        text = f"{error.strerror}" + (f": {error.filename}" if error.filename else "")
    elif isinstance(error, TimeoutError):
        text = "timed out"
    else:
        text = str(error) or type(error).__name__
    text = " ".join(text.split())
    return text if len(text) <= MAX_ERROR_TEXT else text[: MAX_ERROR_TEXT - 1] + "…"
