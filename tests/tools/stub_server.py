"""A small stdio MCP server for the tool-service tests: `python -m tests.tools.stub_server`.

Tools: `echo(text)`, `hang()` (sleeps far longer than any test's call timeout), `crash()`
(the process exits at once, mid-call) and `add_tool()` (registers `added` and tells the
client its tool list changed).
"""

from __future__ import annotations

import os

import anyio
from mcp.server.mcpserver import Context, MCPServer

server: MCPServer = MCPServer("stub")


@server.tool()
def echo(text: str) -> dict[str, str]:
    """Return the text."""
    return {"text": text, "pid": str(os.getpid())}


@server.tool()
async def hang() -> str:
    """Never answer (within a test); the file `HANG_FILE` says the call has arrived."""
    await anyio.Path(os.environ["HANG_FILE"]).write_text(str(os.getpid()))
    await anyio.sleep(3600)
    return "woke up"


@server.tool()
def crash() -> str:
    """Exit without answering."""
    os._exit(3)


@server.tool()
async def add_tool(ctx: Context) -> str:
    """Add the tool `added` and say the list changed."""
    server.add_tool(lambda: "added", name="added", description="A tool added at run time.")
    await ctx.session.send_tool_list_changed()
    return "added"


if __name__ == "__main__":
    server.run("stdio")
