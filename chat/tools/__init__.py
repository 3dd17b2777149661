"""Tools through MCP: the servers file, the client service, Parley's own MCP server."""
