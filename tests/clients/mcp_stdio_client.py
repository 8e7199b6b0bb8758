#!/usr/bin/env python3
"""An MCP client of the official `mcp` SDK: on the stdio transport it launches the server command
as a subprocess; with `--url` it talks Streamable HTTP to a running server instead. It
initializes, lists tools, calls `add` `--calls` times (and, with `--bad-call`, one unknown
tool), and prints one JSON line: {"calls": N, "results": [...], "tools": [...]}.

    mcp_stdio_client.py --calls 3 -- python mcp_stdio_server.py
    mcp_stdio_client.py --calls 3 --url http://127.0.0.1:8000/mcp
"""

import argparse
import asyncio
import json

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client


def transport(a, cmd):
    if a.url:
        return streamable_http_client(a.url)
    return stdio_client(StdioServerParameters(command=cmd[0], args=cmd[1:]))


async def run(a, cmd):
    summary = {"calls": 0, "results": [], "tools": []}
    async with transport(a, cmd) as streams:
        read, write = streams[0], streams[1]
        async with ClientSession(read, write) as session:
            await session.initialize()
            tools = await session.list_tools()
            summary["tools"] = [t.name for t in tools.tools]
            for i in range(a.calls):
                r = await session.call_tool("add", {"a": i, "b": 1})
                summary["calls"] += 1
                summary["results"].append(r.content[0].text if r.content else None)
            if a.bad_call:
                r = await session.call_tool("no_such_tool", {})
                summary["bad_call_is_error"] = bool(r.is_error)
    print(json.dumps(summary), flush=True)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--calls", type=int, default=1)
    p.add_argument("--bad-call", action="store_true")
    p.add_argument("--url", help="a Streamable HTTP server's endpoint, instead of launching one")
    p.add_argument("cmd", nargs=argparse.REMAINDER)
    a = p.parse_args()
    cmd = a.cmd[1:] if a.cmd and a.cmd[0] == "--" else a.cmd
    asyncio.run(run(a, cmd))


if __name__ == "__main__":
    main()
