#!/usr/bin/env python3
"""Chat calls from the official OpenAI SDK's async client over HTTPS.

asyncio code does TLS on memory BIOs (`ssl.MemoryBIO` + `SSLObject`, through anyio's TLS stream):
OpenSSL encrypts into a buffer and the event loop writes it to the socket afterwards, unlike the
sync client's `SSLSocket`. llm-observer's TLS tests run this to show such connections are decoded.

    async_https.py --base-url https://127.0.0.1:PORT --cacert cert.pem --model M --n N [--stream] [--fresh]

Prints one JSON line like workload.py: {"requests", "ok", "prompt_tokens", "completion_tokens",
"errors"}, the token counts being the server's own `usage`. Requests run one after another on one
keep-alive connection (with --fresh, each on a client and connection of its own); retries are off.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import ssl

import httpx2
import openai


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base-url", required=True)
    p.add_argument("--cacert", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--n", type=int, default=1)
    p.add_argument("--stream", action="store_true")
    p.add_argument("--fresh", action="store_true", help="a new client (and connection) per call")
    a = p.parse_args()

    def new_client():
        http = openai.DefaultAsyncHttpxClient(
            limits=httpx2.Limits(max_connections=1, max_keepalive_connections=1),
            trust_env=False, verify=ssl.create_default_context(cafile=a.cacert))
        return openai.AsyncOpenAI(base_url=a.base_url.rstrip("/") + "/v1", api_key="sk-emulator",
                                  max_retries=0, timeout=60.0, http_client=http)

    client = new_client()
    summary = {"requests": 0, "ok": 0, "prompt_tokens": 0, "completion_tokens": 0, "errors": {}}
    messages = [{"role": "user", "content": "Why is the sky blue?"}]
    for i in range(a.n):
        if a.fresh and i > 0:
            await client.close()
            client = new_client()
        summary["requests"] += 1
        try:
            usage = None
            if a.stream:
                resp = await client.chat.completions.create(
                    model=a.model, max_tokens=5, messages=messages, stream=True,
                    stream_options={"include_usage": True})
                async for chunk in resp:
                    if chunk.usage:
                        usage = chunk.usage
            else:
                resp = await client.chat.completions.create(model=a.model, max_tokens=5, messages=messages)
                usage = resp.usage
            summary["ok"] += 1
            summary["prompt_tokens"] += usage.prompt_tokens
            summary["completion_tokens"] += usage.completion_tokens
        except Exception as e:  # noqa: BLE001 - reported, not raised: the summary is the result
            k = type(e).__name__
            summary["errors"][k] = summary["errors"].get(k, 0) + 1
    await client.close()
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
