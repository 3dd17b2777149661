"""A fix for Hypercorn 0.18 (pinned below 0.19), applied by the composition root before serving.

With `websocket_ping_interval` set, Hypercorn's ping loop sleeps the whole interval even after
its WebSocket has closed, and the connection's task group waits for it: every closed socket is
held for up to the interval (20 s), and a stop with any socket seen in that time waits out
`graceful_timeout` and ends in a CancelledError traceback. The loop below sends the same pings
but notices the close within a second. `tests/ws/` stops servers that had sockets open and
requires a quick, clean exit; `test_hypercorn_fixes.py` fails when a Hypercorn upgrade changes
the loop this replaces, so the fix is looked at again rather than silently kept.
"""

from __future__ import annotations

import inspect
from typing import Any

from hypercorn.protocol.ws_stream import WSStream
from wsproto.events import Ping

# The loop as Hypercorn 0.18.0 writes it: replaced only while it still reads so.
ORIGINAL = """    async def _send_pings(self) -> None:
        while not self.closed:
            await self._send_wsproto_event(Ping())
            await self.context.sleep(self.config.websocket_ping_interval)
"""
NOTICE_CLOSE_S = 1.0
_hypercorns_own = WSStream._send_pings


async def _send_pings(self: Any) -> None:
    while not self.closed:
        await self._send_wsproto_event(Ping())
        waited = 0.0
        while not self.closed and waited < self.config.websocket_ping_interval:
            step = min(NOTICE_CLOSE_S, self.config.websocket_ping_interval - waited)
            await self.context.sleep(step)
            waited += step


def original_is_known() -> bool:
    return inspect.getsource(_hypercorns_own) == ORIGINAL


def apply() -> None:
    """Replace the ping loop, if it is still the one this fix was written for."""
    if original_is_known():
        WSStream._send_pings = _send_pings  # type: ignore[method-assign]
