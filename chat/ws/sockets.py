"""The open sockets of a process: the per-user cap, and one sweep for expired tokens.

One periodic sweep over every socket (run by the composition root beside the streams'
keep-alive sweep) instead of a timer task per socket: an idle socket then costs only its
reader and writer (docs/benchmarks.md, WebSocket).
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from typing import TYPE_CHECKING

import anyio

if TYPE_CHECKING:
    from chat.ws.socket import ChatSocket

# How often the sweep looks for expired tokens: a socket outlives its token by at most this.
SWEEP_S = 1.0


class Sockets:
    """Every open socket of this instance."""

    def __init__(self, max_per_user: int) -> None:
        self.max_per_user = max_per_user
        self._open: set[ChatSocket] = set()
        self._per_user: Counter[uuid.UUID] = Counter()

    def __len__(self) -> int:
        return len(self._open)

    def admit(self, user_id: uuid.UUID) -> bool:
        """Count one more socket for the user, unless that is over the cap."""
        if self._per_user[user_id] >= self.max_per_user:
            return False
        self._per_user[user_id] += 1
        return True

    def release(self, user_id: uuid.UUID) -> None:
        self._per_user[user_id] -= 1
        if self._per_user[user_id] <= 0:
            del self._per_user[user_id]

    def add(self, socket: ChatSocket) -> None:
        self._open.add(socket)

    def discard(self, socket: ChatSocket) -> None:
        self._open.discard(socket)

    def expire(self, now: float) -> None:
        """End every socket whose token has expired."""
        for socket in [s for s in self._open if s.expires_at <= now]:
            socket.expire()

    async def sweep(self) -> None:
        """Expire sockets every `SWEEP_S`, for ever."""
        while True:
            await anyio.sleep(SWEEP_S)
            self.expire(time.time())
