"""One MCP server's life: its process and session, owned by one task, restarted with backoff.

The SDK's session (and the stdio transport under it) must be entered and exited in the same
task, so one owner task per server holds them; callers only borrow the live session to send
requests on it. A dead stdio server never recovers by itself: the owner notices its stdout
closing at once (and a failed health check within `health_s`), ends that life and starts a
new one, with exponential backoff (tenacity) while the server keeps failing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import anyio
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, wait_exponential

from chat.tools.config import SEPARATOR, ServerConfig
from chat.tools.models import ServerState, ServerStatus, ToolSpec
from chat.tools.watch import WatchedStream, describe_error, is_valid_tool_name, mcp_error

if TYPE_CHECKING:
    # The SDK costs ~0.7 s to import: every process that starts a server imports it then
    # (`_life`), not every process that starts (CLI commands, tests, workers' parents).
    from mcp.client.session import ClientSession, IncomingMessage

log = logging.getLogger(__name__)

# A life that stayed healthy this long ends without backoff: the next start is immediate.
STABLE_S = 5.0
# Waiting for a start, callers allow this beyond the start deadline, so that the owner's
# verdict (which starts its clock a little later, after the spawn) reaches them first.
START_MARGIN_S = 1.0


class ServerDown(Exception):
    """A server's life ended badly (it could not start, died, hung or failed its check)."""


class Unavailable(Exception):
    """No session to call on: the server is down, failed to start, or is stopping."""


@dataclass(frozen=True)
class Timing:
    start_s: float = 15.0  # spawn + initialize + first tools/list
    health_s: float = 30.0  # a ping when the session has been quiet this long
    ping_s: float = 10.0  # ... which must be answered within this
    backoff_max_s: float = 30.0


class Supervisor:
    """Owns one configured server: `run` is its owner task, `session` lends the live one."""

    def __init__(self, config: ServerConfig, timing: Timing) -> None:
        self.config = config
        self.timing = timing
        self.state: ServerState = "idle" if config.enabled else "disabled"
        self.last_error: str | None = None
        self.restarts = 0
        self.tools: list[ToolSpec] = []
        self._session: ClientSession | None = None
        # Bumped for every new session: a failure reported against an older one is stale.
        self.generation = 0
        # Whether the latest life ended before its session was ready (calls then fail fast).
        self._start_failed = False
        # When the current life's session became ready (`None` until it does).
        self._ready_at: float | None = None
        self._wanted = anyio.Event()
        self._changed = anyio.Event()
        # The owner's wake-up: set after one of the flags below (only the owner waits on it).
        self._wake = anyio.Event()
        self._closed = False
        self._stale = False
        self._end_reason: str | None = None

    # -- what callers use -------------------------------------------------------------------

    def want(self) -> None:
        """Start the server if it has not been (servers start on first use)."""
        self._wanted.set()

    def status(self) -> ServerStatus:
        return ServerStatus(
            self.config.name, self.state, self.last_error, self.restarts, list(self.tools)
        )

    def _is_settled(self) -> bool:
        # A server whose last start failed does not hold anyone up while it tries again
        # (one that hangs at start would otherwise delay every reply by the start deadline).
        return self.state in ("ready", "disabled", "stopped") or self._start_failed

    async def settled(self) -> None:
        """Wait until the server is up, or down with a reason (a start attempt has ended)."""
        while not self._is_settled():
            await self._changed.wait()

    async def session(self) -> tuple[ClientSession, int]:
        """The live session and its generation, waiting for a start or restart in progress."""
        self.want()
        with anyio.move_on_after(self.timing.start_s + START_MARGIN_S):
            await self.settled()
        if self.state == "ready" and self._session is not None:
            return self._session, self.generation
        if not self._is_settled():
            raise Unavailable(f"the server did not start within {self.timing.start_s:g} s")
        if self._start_failed:
            raise Unavailable(f"the server could not start: {self.last_error}")
        raise Unavailable(f"the server is {self.state}")

    def end_session(self, generation: int, reason: str) -> None:
        """Restart the server unless that session was already replaced (a call failed on it)."""
        if self.state == "ready" and generation == self.generation and self._end_reason is None:
            self._end_reason = reason
            self._wake.set()

    # -- the owner task ---------------------------------------------------------------------

    async def run(self) -> None:
        """Start on first use, then keep the server running until cancelled."""
        if not self.config.enabled:
            return
        try:
            await self._wanted.wait()
            while True:
                retrying = AsyncRetrying(
                    sleep=anyio.sleep,
                    retry=retry_if_exception_type(ServerDown),
                    wait=wait_exponential(multiplier=0.25, max=self.timing.backoff_max_s),
                    before_sleep=self._before_retry,
                )
                # Returns once a life that was stable has ended: the backoff starts afresh.
                await retrying(self._life)
        finally:
            self._set_state("stopped")

    def _before_retry(self, retry: RetryCallState) -> None:
        wait = retry.next_action.sleep if retry.next_action else 0.0
        log.warning(
            "MCP server %s is down (%s); restarting in %.2f s",
            self.config.name,
            self.last_error,
            wait,
        )

    async def _life(self) -> None:
        """One process and session; `ServerDown` when it ends badly."""
        self._set_state("starting")
        self._closed = self._stale = False
        self._end_reason = None
        self._ready_at = None
        from mcp.client.session import ClientSession
        from mcp.client.stdio import StdioServerParameters, stdio_client

        params = StdioServerParameters(
            command=self.config.command,
            args=list(self.config.args),
            env=self.config.env,
            cwd=self.config.cwd,
        )
        try:
            async with stdio_client(params) as (read, write):
                watched = WatchedStream(read, self._on_closed)
                handler = self._on_message
                async with ClientSession(watched, write, message_handler=handler) as session:
                    try:
                        with anyio.fail_after(self.timing.start_s):
                            await session.initialize()
                            tools = await self._list_tools(session)
                    except TimeoutError:
                        reason = f"it did not start within {self.timing.start_s:g} s"
                        raise ServerDown(self._failed(reason)) from None
                    except Exception as error:
                        raise ServerDown(self._failed(describe_error(error))) from error
                    self._ready(session, tools)
                    # Failed as soon as the reason is known: stopping the process takes a while.
                    raise ServerDown(self._failed(await self._serve(session)))
        except Exception as error:  # whatever the process, pipe or protocol did
            reason = self._failed(describe_error(error))
        finally:
            self._session = None
        if self._ready_at is not None and anyio.current_time() - self._ready_at >= STABLE_S:
            log.warning("MCP server %s is down (%s); restarting", self.config.name, reason)
            return
        raise ServerDown(reason)

    def _ready(self, session: ClientSession, tools: list[ToolSpec]) -> None:
        self._ready_at = anyio.current_time()
        # A late failure of a call on the previous session must not end this one.
        self._end_reason = None
        self.tools = tools
        self._session = session
        self.generation += 1
        self.last_error = None
        self._start_failed = False
        self._set_state("ready")
        log.info("MCP server %s ready with %d tools", self.config.name, len(tools))

    def _failed(self, reason: str) -> str:
        """Mark this life failed (once); the reason it first failed for."""
        if self.state == "failed":
            return self.last_error or reason
        self._session = None
        self.last_error = reason
        self.tools = []
        self._start_failed = self._ready_at is None
        self.restarts += 1
        self._set_state("failed")
        return reason

    async def _serve(self, session: ClientSession) -> str:
        """Keep the session until it closes or must end; the reason it ended."""
        while True:
            with anyio.move_on_after(self.timing.health_s) as quiet:
                await self._wake.wait()
            # Replaced before the flags are read: a flag set from now on sets the new event.
            self._wake = anyio.Event()
            if self._closed:
                return "its process exited (or closed its output)"
            if self._end_reason is not None:
                return self._end_reason
            if self._stale:
                self._stale = False
                try:
                    with anyio.fail_after(self.timing.ping_s):
                        self.tools = await self._list_tools(session)
                except (TimeoutError, mcp_error()) as error:
                    return f"listing its changed tools failed: {describe_error(error)}"
                self._notify()
            if quiet.cancelled_caught:
                try:
                    with anyio.fail_after(self.timing.ping_s):
                        await session.send_ping()
                except (TimeoutError, mcp_error()) as error:
                    return f"its health check failed: {describe_error(error)}"

    async def _list_tools(self, session: ClientSession) -> list[ToolSpec]:
        from mcp_types import PaginatedRequestParams

        specs: list[ToolSpec] = []
        cursor: str | None = None
        while True:
            params = PaginatedRequestParams(cursor=cursor) if cursor else None
            listing = await session.list_tools(params=params)
            for tool in listing.tools:
                name = f"{self.config.name}{SEPARATOR}{tool.name}"
                if not is_valid_tool_name(name):
                    log.warning("MCP server %s: tool %r skipped (name)", self.config.name, name)
                    continue
                specs.append(ToolSpec(name, tool.description or "", dict(tool.input_schema)))
            cursor = listing.next_cursor
            if not cursor:
                return specs

    def _on_closed(self) -> None:
        self._closed = True
        self._wake.set()

    async def _on_message(self, message: IncomingMessage) -> None:
        # Runs in the session's read loop: only flag the change, the owner lists the tools.
        from mcp_types import ToolListChangedNotification

        if isinstance(message, ToolListChangedNotification):
            self._stale = True
            self._wake.set()

    def _set_state(self, state: ServerState) -> None:
        self.state = state
        self._notify()

    def _notify(self) -> None:
        changed, self._changed = self._changed, anyio.Event()
        changed.set()


def is_connection_closed(error: BaseException) -> bool:
    from mcp_types.jsonrpc import CONNECTION_CLOSED

    return isinstance(error, mcp_error()) and error.code == CONNECTION_CLOSED
