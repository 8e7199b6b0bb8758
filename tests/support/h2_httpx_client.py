"""Python httpx (HTTP/2 via the `h2` package: its own frames and HPACK encoder, not nghttp2) as the
client of tests/support/h2c.js, for the decoder fixtures in llm-observer-decode/tests/data/h2/:

    node tests/support/h2c.js relay DIR httpx      # prints: listening on 127.0.0.1:PORT
    python tests/support/h2_httpx_client.py PORT DIR/httpx.client.json

Four chat completions on one HTTP/2 connection (prior knowledge), two at a time: streamed with
include_usage except the last; max_tokens = 3 + i % 3. Needs `pip install httpx h2` (fixture
generation only; the tests read the committed bytes).
"""

import asyncio
import json
import sys


async def one(client, i, seen):
    stream = i != 3
    body = {
        "model": "h2-model",
        "stream": stream,
        "max_tokens": 3 + i % 3,
        "messages": [{"role": "user", "content": f"hello number {i}"}],
    }
    if stream:
        body["stream_options"] = {"include_usage": True}
    headers = {"authorization": "Bearer sk-fixture-secret"}
    async with client.stream("POST", "/v1/chat/completions", json=body, headers=headers) as r:
        text = (await r.aread()).decode()
    seen["requests"] += 1
    seen["ok"] += r.status_code == 200
    if stream:
        for line in text.split("\n"):
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            ev = json.loads(line[6:])
            if ev["choices"] and ev["choices"][0]["delta"].get("content"):
                seen["content_chunks"] += 1
            if ev.get("usage"):
                seen["prompt_tokens"] += ev["usage"]["prompt_tokens"]
                seen["completion_tokens"] += ev["usage"]["completion_tokens"]
    else:
        ev = json.loads(text)
        seen["prompt_tokens"] += ev["usage"]["prompt_tokens"]
        seen["completion_tokens"] += ev["usage"]["completion_tokens"]


async def main(port, out):
    import httpx

    seen = {"requests": 0, "ok": 0, "content_chunks": 0, "prompt_tokens": 0, "completion_tokens": 0}
    async with httpx.AsyncClient(
        http1=False, http2=True, base_url=f"http://127.0.0.1:{port}"
    ) as client:
        await asyncio.gather(one(client, 0, seen), one(client, 1, seen))
        await asyncio.gather(one(client, 2, seen), one(client, 3, seen))
    with open(out, "w") as f:
        f.write(json.dumps(seen, separators=(",", ":")) + "\n")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2]))
