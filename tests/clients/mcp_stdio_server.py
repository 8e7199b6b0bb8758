#!/usr/bin/env python3
"""A real MCP server on the stdio transport (the official `mcp` SDK's MCPServer, formerly FastMCP)
with one tool, `add`. Launched as a subprocess by `mcp_stdio_client.py`."""

from mcp.server.mcpserver import MCPServer

server = MCPServer("llm-observer-stdio-test")


@server.tool()
def add(a: int, b: int) -> int:
    """Adds two integers."""
    return a + b


if __name__ == "__main__":
    server.run("stdio")
