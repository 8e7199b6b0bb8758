#!/usr/bin/env python3
"""A real MCP server of the official `mcp` SDK (MCPServer, formerly FastMCP) with one tool, `add`:
on the stdio transport when launched as a subprocess by `mcp_stdio_client.py`; with
`--http PORT`, Streamable HTTP on 127.0.0.1:PORT (endpoint `/mcp`) until killed."""

import sys

from mcp.server.mcpserver import MCPServer

server = MCPServer("llm-observer-stdio-test")


@server.tool()
def add(a: int, b: int) -> int:
    """Adds two integers."""
    return a + b


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--http":
        server.run("streamable-http", host="127.0.0.1", port=int(sys.argv[2]))
    else:
        server.run("stdio")
