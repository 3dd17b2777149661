"""The services one app runs with, hung off the app by the composition root."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from quart import current_app

if TYPE_CHECKING:
    from databases import Database

    from actors.bridge import Bridge
    from actors.hub import Hub
    from actors.registry import Registry
    from chat.credentials import Passwords, Tokens, UserCache
    from chat.metrics import Metrics
    from chat.settings import Settings
    from chat.throttle import Throttle
    from chat.tools.service import ToolService
    from chat.ws.sockets import Sockets

EXTENSION = "parley"


@dataclass
class Services:
    settings: Settings
    db: Database
    tokens: Tokens
    passwords: Passwords
    users: UserCache | None
    hub: Hub
    registry: Registry
    sockets: Sockets
    # The Redis bridge, when `REDIS_URL` is set.
    bridge: Bridge | None = None
    # Rate limits and quotas (chat/throttle.py); `None` only where no app serves requests.
    throttle: Throttle | None = None
    # Prometheus metrics, when `METRICS_ENABLED` or `METRICS_BIND` is set.
    metrics: Metrics | None = None
    # The MCP tool service (chat/tools/), built by the composition root.
    tools: ToolService | None = None


def services() -> Services:
    """The current app's services (inside a request, websocket or app context)."""
    found: Services = current_app.extensions[EXTENSION]
    return found
