"""The tool service: every configured MCP server behind one small API (docs/tools.md).

Providers and routes use only `specs`, `call` and `status`. Each server has an owner task
(`chat/tools/supervisor.py`) running in the service's task group, which the composition root
starts; closing the service cancels them, and each one's stdio transport then stops its
process (stdin closed, SIGTERM, SIGKILL, each step bounded), also when a call is in flight.
"""

from __future__ import annotations

import logging
import uuid
from typing import TYPE_CHECKING, Any, cast

import anyio
from anyio.abc import TaskStatus

from chat.tools.config import PARLEY_SERVER, SEPARATOR, ServerConfig
from chat.tools.identity import ACTING_USER_META_KEY, issue_acting_token
from chat.tools.models import ServerStatus, ToolOutcome, ToolSpec
from chat.tools.supervisor import (
    START_MARGIN_S,
    Supervisor,
    Timing,
    Unavailable,
    is_connection_closed,
)
from chat.tools.watch import describe_error, mcp_error

if TYPE_CHECKING:
    # The SDK is imported where a session starts (supervisor.py): it is slow to import.
    import mcp_types as types

log = logging.getLogger(__name__)

# A tool's text goes back to the model: bounded, so one tool cannot fill its context.
MAX_RESULT_TEXT = 16_000
# How long the acting token of one call stays valid (it is made for that call alone).
ACTING_TOKEN_TTL_S = 120.0
# Closing waits this long for every server to stop (the transport bounds each step).
CLOSE_DEADLINE_S = 6.0

__all__ = ["ServerStatus", "ToolOutcome", "ToolService", "ToolSpec"]


class ToolService:
    def __init__(
        self,
        servers: list[ServerConfig],
        *,
        tools_secret: str,
        call_timeout_s: float,
        timing: Timing | None = None,
    ) -> None:
        self.call_timeout_s = call_timeout_s
        self._secret = tools_secret
        self._servers = {s.name: Supervisor(s, timing or Timing()) for s in servers}
        self._scope: anyio.CancelScope | None = None
        self.stopped = anyio.Event()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """The owner tasks, until `close` (or a cancellation) stops every server."""
        try:
            with anyio.CancelScope() as self._scope:
                async with anyio.create_task_group() as tg:
                    for server in self._servers.values():
                        tg.start_soon(server.run)
                    task_status.started()
        finally:
            self.stopped.set()

    async def close(self) -> None:
        """Stop every server and wait (bounded) until their processes are gone."""
        if self._scope is None:
            return
        self._scope.cancel()
        with anyio.move_on_after(CLOSE_DEADLINE_S, shield=True):
            await self.stopped.wait()

    def start(self) -> None:
        """Start every server that has not started yet, without waiting for any."""
        for server in self._servers.values():
            server.want()

    async def specs(self) -> list[ToolSpec]:
        """Every ready server's tools (servers start here on first use); a failing one is left
        out, the others are not held up beyond the start deadline."""
        self.start()
        async with anyio.create_task_group() as tg:
            for server in self._servers.values():
                tg.start_soon(self._settle, server)
        return [spec for s in self._servers.values() if s.state == "ready" for spec in s.tools]

    @staticmethod
    async def _settle(server: Supervisor) -> None:
        with anyio.move_on_after(server.timing.start_s + START_MARGIN_S):
            await server.settled()

    def status(self) -> list[ServerStatus]:
        return [server.status() for server in self._servers.values()]

    async def call(
        self,
        name: str,
        arguments: dict[str, Any],
        *,
        user_id: uuid.UUID,
        conversation_id: uuid.UUID,
    ) -> ToolOutcome:
        """Call a namespaced tool; never raises for a tool or server failure (`ok` false)."""
        server_name, _, tool = name.partition(SEPARATOR)
        server = self._servers.get(server_name)
        if server is None or not tool or not server.config.enabled:
            return ToolOutcome(False, f"there is no tool named {name!r}")
        meta: types.RequestParamsMeta | None = None
        if server_name == PARLEY_SERVER:
            # Who the call acts for, signed: never an argument the model chose.
            token = issue_acting_token(self._secret, user_id, conversation_id, ACTING_TOKEN_TTL_S)
            meta = cast("types.RequestParamsMeta", {ACTING_USER_META_KEY: token})
        timeout_s = server.config.timeout_s or self.call_timeout_s
        # A closed connection is retried once on the restarted server: it is how a call finds
        # out that the process died since the last one.
        for attempt in (1, 2):
            try:
                session, generation = await server.session()
            except Unavailable as error:
                return ToolOutcome(False, f"{name} is unavailable: {error}")
            try:
                with anyio.fail_after(timeout_s):
                    result = await session.call_tool(tool, arguments, meta=meta)
            except TimeoutError:
                # A hung server may never answer anything again: start a fresh one.
                server.end_session(generation, f"a call to {tool} took over {timeout_s:g} s")
                return ToolOutcome(False, f"{name} did not answer within {timeout_s:g} s")
            except Exception as error:
                if is_connection_closed(error) or isinstance(error, anyio.BrokenResourceError):
                    server.end_session(generation, "the connection closed during a call")
                    if attempt == 1:
                        continue
                elif not isinstance(error, mcp_error()):
                    log.warning("MCP call %s failed", name, exc_info=True)
                return ToolOutcome(False, f"{name} failed: {describe_error(error)}")
            return _outcome(result)
        raise AssertionError("unreachable")


def _outcome(result: types.CallToolResult) -> ToolOutcome:
    from mcp_types import TextContent

    parts: list[str] = []
    for block in result.content:
        if isinstance(block, TextContent):
            parts.append(block.text)
        else:
            parts.append(f"[{block.type} content]")
    text = "\n".join(parts)
    if len(text) > MAX_RESULT_TEXT:
        text = text[: MAX_RESULT_TEXT - 1] + "…"
    return ToolOutcome(ok=not result.is_error, text=text, data=result.structured_content)
