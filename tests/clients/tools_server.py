#!/usr/bin/env python3
"""A loopback "agent tools" server for the dashboard test (tests/prometheus.rs): the two things the
LLM emulator does not serve.

- `POST /v1/chat/completions`: an OpenAI chat completion (not streamed) in which the model asks
  for one tool call, `get_weather`, with reported usage (12 prompt, 7 completion tokens).
- `POST /mcp`: MCP Streamable HTTP, one JSON-RPC message per POST answered as `application/json`:
  `initialize`, `tools/list`, `tools/call` (any tool; called with the argument `"fail": true` it
  answers a tool result with `isError: true`), any other method a JSON-RPC error -32601;
  notifications get 202.

Prints `listening on 127.0.0.1:PORT` as its first stdout line, then serves HTTP/1.1 (keep-alive)
until killed. Standard library only.
"""

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TOOL = {"name": "get_weather", "description": "Weather of a city",
        "inputSchema": {"type": "object", "properties": {"city": {"type": "string"}}}}


def chat_completion(req):
    return {
        "id": "chatcmpl-tools-1",
        "object": "chat.completion",
        "created": 1700000000,
        "model": req.get("model", "unknown"),
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": None, "tool_calls": [{
                "id": "call_1", "type": "function",
                "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
            "finish_reason": "tool_calls",
        }],
        "usage": {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19},
    }


def mcp_reply(msg):
    """The JSON-RPC response to `msg`, or None for a notification."""
    if "id" not in msg:
        return None
    method, rid = msg.get("method"), msg["id"]
    if method == "initialize":
        result = {"protocolVersion": "2025-06-18", "capabilities": {"tools": {}},
                  "serverInfo": {"name": "tools-server", "version": "1"}}
    elif method == "tools/list":
        result = {"tools": [TOOL]}
    elif method == "tools/call":
        params = msg.get("params") or {}
        name = str(params.get("name"))
        if (params.get("arguments") or {}).get("fail"):
            result = {"content": [{"type": "text", "text": f"tool {name} failed"}], "isError": True}
        else:
            result = {"content": [{"type": "text", "text": "sunny"}], "isError": False}
    else:
        return {"jsonrpc": "2.0", "id": rid, "error": {"code": -32601, "message": "Method not found"}}
    return {"jsonrpc": "2.0", "id": rid, "result": result}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def send_json(self, status, obj):
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        try:
            msg = json.loads(self.rfile.read(length) or b"{}")
        except ValueError:
            self.send_json(400, {"error": "bad json"})
            return
        if self.path == "/v1/chat/completions":
            self.send_json(200, chat_completion(msg))
        elif self.path == "/mcp":
            reply = mcp_reply(msg)
            if reply is None:
                self.send_response(202)
                self.send_header("Content-Length", "0")
                self.end_headers()
            else:
                self.send_json(200, reply)
        else:
            self.send_json(404, {"error": "not found"})


def main():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(f"listening on 127.0.0.1:{server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
