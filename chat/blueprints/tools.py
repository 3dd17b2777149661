"""The MCP servers the assistant can use, and their tools (docs/tools.md)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from quart import Blueprint
from quart_schema import document_response, security_scheme_blueprint

from chat.auth import require_user
from chat.schemas import Error, ToolServers
from chat.services import services

blueprint = Blueprint("tools", __name__, url_prefix="/api/v1/tools")
security_scheme_blueprint(blueprint, [{"bearer": []}])


@blueprint.get("")
@document_response(ToolServers, 200)
@document_response(Error, 401)
@require_user
async def get_tools() -> dict[str, Any]:
    """Each configured MCP server: its state, last error and tools.

    Servers start on first use. This starts any that has not (it answers at once: such a
    server shows as `starting`, or `idle` just before; ask again for its tools or its error).
    """
    tools = services().tools
    if tools is None:
        return {"servers": []}
    tools.start()
    return {"servers": [asdict(status) for status in tools.status()]}
