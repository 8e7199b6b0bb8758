#!/usr/bin/env python3
"""Drive an LLM server with the official Python clients (or curl) and report what the client saw.

llm-observer's end-to-end tests run this against the loopback emulator (`llm-emulator`) and compare
the agent's /metrics with the JSON summary printed here (one line on stdout):

    {"api": ..., "requests": N, "ok": N, "errors": {"RateLimitError:429": 1}, "cancelled": 0,
     "prompt_tokens": P, "cached_tokens": C, "completion_tokens": T, "usage_reported": N,
     "content_events": E, "per_request": [...]}

Token numbers are the server's own usage fields (OpenAI `usage`, Anthropic `message_start` /
`message_delta` usage, Ollama `prompt_eval_count` / `eval_count`), summed over the requests that
reported them; `content_events` counts content-bearing stream events (or 1 per non-streamed answer).
`prompt_tokens` always includes cached tokens (Anthropic's `input_tokens` + cache fields).

Examples:
    workload.py --base-url http://127.0.0.1:PORT --api openai --mode stream --usage --n 5 --model m1
    workload.py --base-url ... --api anthropic --mode stream --max-tokens 8
    workload.py --base-url ... --api ollama --endpoint generate --mode nonstream
    workload.py --base-url ... --api openai --mode stream --model slow --cancel-after-tokens 3
    workload.py --base-url ... --api openai --mode stream --concurrency 64 --n 64
    workload.py --base-url ... --api ollama --keepalive --n 200     # 200 requests, one connection
    workload.py --base-url ... --api openai --client curl --mode stream --usage

SDK retries are off (max_retries=0) so that one workload request is one HTTP request, and proxies
from the environment are ignored: traffic only goes to the given base URL.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

DEFAULT_ENDPOINT = {"openai": "chat", "anthropic": "messages", "ollama": "chat"}


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base-url", required=True, help="server root, e.g. http://127.0.0.1:11434 (no /v1)")
    p.add_argument("--api", required=True, choices=["openai", "anthropic", "ollama"])
    p.add_argument("--endpoint", choices=["chat", "completions", "generate", "messages"],
                   help="openai: chat|completions; ollama: chat|generate; anthropic: messages")
    p.add_argument("--mode", choices=["stream", "nonstream"], default="stream")
    p.add_argument("--usage", action="store_true", help="OpenAI stream_options.include_usage")
    p.add_argument("--n", type=int, default=1, help="number of requests")
    p.add_argument("--concurrency", type=int, default=1, help="requests in flight at once")
    p.add_argument("--model", default="m1")
    p.add_argument("--prompt", default="Why is the sky blue?")
    p.add_argument("--max-tokens", type=int, default=8, help="max_tokens / num_predict")
    p.add_argument("--cancel-after-tokens", type=int, default=None,
                   help="close the stream (and its connection) after this many content events")
    p.add_argument("--keepalive", action="store_true",
                   help="one client with a single-connection pool: sequential requests share ONE connection")
    p.add_argument("--new-connection", action="store_true",
                   help="a fresh client (so a fresh TCP connection) for every request")
    p.add_argument("--client", choices=["sdk", "curl"], default="sdk")
    p.add_argument("--timeout", type=float, default=60.0, help="per-request timeout, seconds")
    p.add_argument("--cacert", default=None,
                   help="CA certificate (PEM) to trust for an https:// base URL (openai/anthropic SDKs)")
    p.add_argument("--host", default=None,
                   help="Host header the openai/anthropic SDKs send (e.g. api.openai.com), the URL unchanged")
    a = p.parse_args(argv)
    a.endpoint = a.endpoint or DEFAULT_ENDPOINT[a.api]
    valid = {"openai": {"chat", "completions"}, "anthropic": {"messages"}, "ollama": {"chat", "generate"}}
    if a.endpoint not in valid[a.api]:
        p.error(f"--endpoint {a.endpoint} is not an endpoint of --api {a.api}")
    if a.keepalive and (a.concurrency != 1 or a.new_connection):
        p.error("--keepalive means sequential requests on one connection: no --concurrency, no --new-connection")
    if a.cancel_after_tokens is not None and (a.mode != "stream" or a.client != "sdk"):
        p.error("--cancel-after-tokens needs --mode stream and the SDK client")
    return a


class Result:
    """What the client saw for one request."""

    def __init__(self):
        self.ok = False
        self.error = None
        self.cancelled = False
        self.prompt_tokens = None
        self.cached_tokens = None
        self.completion_tokens = None
        self.content_events = 0
        self.ttft_s = None
        self.latency_s = None

    def as_dict(self):
        return dict(self.__dict__)


def error_name(exc):
    """`ClassName` or `ClassName:status` so tests can match on both."""
    status = getattr(exc, "status_code", None)
    name = type(exc).__name__
    return f"{name}:{status}" if isinstance(status, int) and status >= 0 else name


# ---------------------------------------------------------------- clients


def tls_args(a):
    """`verify=` for the SDKs' HTTP client: the test's self-signed CA (CPython's ssl, so libssl.so.3)."""
    if not a.cacert:
        return {}
    import ssl

    return {"verify": ssl.create_default_context(cafile=a.cacert)}


def host_args(a):
    """`default_headers=` with the `--host` Host header (the SDKs' HTTP client sends it as given)."""
    return {"default_headers": {"Host": a.host}} if a.host else {}


def make_client(a):
    limits_n = 1 if a.keepalive else max(a.concurrency, 1)
    if a.api == "openai":
        import openai
        import httpx2

        http = openai.DefaultHttpxClient(
            limits=httpx2.Limits(max_connections=limits_n, max_keepalive_connections=limits_n),
            trust_env=False, timeout=a.timeout, **tls_args(a))
        return openai.OpenAI(base_url=a.base_url.rstrip("/") + "/v1", api_key="sk-emulator",
                             max_retries=0, timeout=a.timeout, http_client=http, **host_args(a))
    if a.api == "anthropic":
        import anthropic
        import httpx2

        http = anthropic.DefaultHttpxClient(
            limits=httpx2.Limits(max_connections=limits_n, max_keepalive_connections=limits_n),
            trust_env=False, timeout=a.timeout, **tls_args(a))
        return anthropic.Anthropic(base_url=a.base_url.rstrip("/"), api_key="sk-ant-emulator",
                                   max_retries=0, timeout=a.timeout, http_client=http, **host_args(a))
    import httpx
    import ollama

    return ollama.Client(host=a.base_url, timeout=a.timeout, trust_env=False,
                         limits=httpx.Limits(max_connections=limits_n, max_keepalive_connections=limits_n))


def close_client(client):
    close = getattr(client, "close", None) or getattr(getattr(client, "_client", None), "close", None)
    if close:
        close()


def run_openai(client, a, r, t0):
    stream = a.mode == "stream"
    kwargs = dict(model=a.model, max_tokens=a.max_tokens, stream=stream)
    if stream and a.usage:
        kwargs["stream_options"] = {"include_usage": True}
    if a.endpoint == "chat":
        resp = client.chat.completions.create(messages=[{"role": "user", "content": a.prompt}], **kwargs)
    else:
        resp = client.completions.create(prompt=a.prompt, **kwargs)
    if not stream:
        r.content_events = 1
        take_openai_usage(r, resp.usage)
        return
    try:
        for chunk in resp:
            if chunk.choices:
                c = chunk.choices[0]
                text = c.delta.content if a.endpoint == "chat" else c.text
                if text:
                    saw_token(r, t0)
                    if cancel_now(a, r):
                        return
            if chunk.usage:
                take_openai_usage(r, chunk.usage)
    finally:
        resp.close()


def take_openai_usage(r, usage):
    if usage is None:
        return
    r.prompt_tokens = usage.prompt_tokens
    r.completion_tokens = usage.completion_tokens
    details = getattr(usage, "prompt_tokens_details", None)
    r.cached_tokens = getattr(details, "cached_tokens", None) if details else None


def run_anthropic(client, a, r, t0):
    stream = a.mode == "stream"
    resp = client.messages.create(model=a.model, max_tokens=a.max_tokens, stream=stream,
                                  messages=[{"role": "user", "content": a.prompt}])
    if not stream:
        r.content_events = 1
        take_anthropic_usage(r, resp.usage, resp.usage.output_tokens)
        return
    try:
        for event in resp:
            if event.type == "message_start":
                take_anthropic_usage(r, event.message.usage, None)
            elif event.type == "content_block_delta":
                saw_token(r, t0)
                if cancel_now(a, r):
                    return
            elif event.type == "message_delta":
                # Cumulative: the last message_delta is the final count.
                r.completion_tokens = event.usage.output_tokens
    finally:
        resp.close()


def take_anthropic_usage(r, usage, output_tokens):
    cached = (usage.cache_read_input_tokens or 0) + (usage.cache_creation_input_tokens or 0)
    r.prompt_tokens = usage.input_tokens + cached
    r.cached_tokens = usage.cache_read_input_tokens or 0
    r.completion_tokens = output_tokens


def run_ollama(client, a, r, t0):
    stream = a.mode == "stream"
    options = {"num_predict": a.max_tokens}
    if a.endpoint == "chat":
        resp = client.chat(model=a.model, messages=[{"role": "user", "content": a.prompt}],
                           stream=stream, options=options)
    else:
        resp = client.generate(model=a.model, prompt=a.prompt, stream=stream, options=options)
    parts = resp if stream else [resp]
    try:
        for part in parts:
            text = part.message.content if a.endpoint == "chat" else part.response
            if text and stream:
                saw_token(r, t0)
                if cancel_now(a, r):
                    return
            if part.done:
                r.prompt_tokens = part.prompt_eval_count
                r.completion_tokens = part.eval_count
        if not stream:
            r.content_events = 1
    finally:
        if stream:
            resp.close()  # a generator: closing it closes the HTTP response


def saw_token(r, t0):
    if r.content_events == 0:
        r.ttft_s = time.monotonic() - t0
    r.content_events += 1


def cancel_now(a, r):
    if a.cancel_after_tokens is not None and r.content_events >= a.cancel_after_tokens:
        r.cancelled = True
        return True
    return False


RUNNERS = {"openai": run_openai, "anthropic": run_anthropic, "ollama": run_ollama}


# ---------------------------------------------------------------- curl


def curl_request(a):
    """(url, headers, body) of the same request, for the curl client."""
    base = a.base_url.rstrip("/")
    stream = a.mode == "stream"
    msgs = [{"role": "user", "content": a.prompt}]
    headers = ["content-type: application/json"]
    if a.api == "openai":
        body = {"model": a.model, "max_tokens": a.max_tokens, "stream": stream}
        if stream and a.usage:
            body["stream_options"] = {"include_usage": True}
        if a.endpoint == "chat":
            body["messages"] = msgs
            return base + "/v1/chat/completions", headers, body
        body["prompt"] = a.prompt
        return base + "/v1/completions", headers, body
    if a.api == "anthropic":
        headers += ["x-api-key: sk-ant-emulator", "anthropic-version: 2023-06-01"]
        body = {"model": a.model, "max_tokens": a.max_tokens, "stream": stream, "messages": msgs}
        return base + "/v1/messages", headers, body
    body = {"model": a.model, "stream": stream, "options": {"num_predict": a.max_tokens}}
    if a.endpoint == "chat":
        body["messages"] = msgs
        return base + "/api/chat", headers, body
    body["prompt"] = a.prompt
    return base + "/api/generate", headers, body


def run_curl(a, r, t0):
    url, headers, body = curl_request(a)
    cmd = ["curl", "-sS", "-N", "--max-time", str(a.timeout), "-w", "\n%{http_code}"]
    for h in headers:
        cmd += ["-H", h]
    cmd += ["-d", json.dumps(body), url]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=a.timeout + 5)
    text, _, status = out.stdout.rpartition("\n")
    if out.returncode != 0:
        r.error = f"curl:{out.returncode}"
    elif status != "200":
        r.error = f"HTTP:{status}"
    records = parse_wire(a, text)
    for rec in records:
        if "error" in rec and r.error is None:
            r.error = "stream_error"
        if rec.get("_token"):
            saw_token(r, t0)
        for k in ("prompt_tokens", "cached_tokens", "completion_tokens"):
            if rec.get(k) is not None:
                r.__dict__[k] = rec[k]
    if a.mode == "nonstream" and r.error is None:
        r.content_events = 1


def parse_wire(a, text):
    """Reduce the raw response body to records: {'_token': True} per content event, usage fields."""
    out = []
    if a.mode == "nonstream" or a.api == "ollama":
        objs = [json.loads(line) for line in text.splitlines() if line.strip()]
    else:
        objs = []
        for block in text.split("\n\n"):
            data = "\n".join(l[5:].lstrip(" ") for l in block.splitlines() if l.startswith("data:"))
            if data and data != "[DONE]":
                objs.append(json.loads(data))
    for o in objs:
        rec = {}
        if "error" in o:
            rec["error"] = o["error"]
        if a.api == "openai":
            for c in o.get("choices") or []:
                delta = c.get("delta") or {}
                if a.mode == "stream" and (delta.get("content") or c.get("text")):
                    rec["_token"] = True
            if o.get("usage"):
                u = o["usage"]
                rec.update(prompt_tokens=u["prompt_tokens"], completion_tokens=u["completion_tokens"],
                           cached_tokens=(u.get("prompt_tokens_details") or {}).get("cached_tokens"))
        elif a.api == "anthropic":
            usage = (o.get("message") or {}).get("usage") or (o.get("usage") if o.get("type") == "message" else None)
            if usage:
                cached = usage.get("cache_read_input_tokens") or 0
                rec.update(prompt_tokens=usage["input_tokens"] + cached + (usage.get("cache_creation_input_tokens") or 0),
                           cached_tokens=cached)
                if o.get("type") == "message":
                    rec["completion_tokens"] = usage["output_tokens"]
            if o.get("type") == "content_block_delta":
                rec["_token"] = True
            if o.get("type") == "message_delta":
                rec["completion_tokens"] = o["usage"]["output_tokens"]
        else:
            text_part = (o.get("message") or {}).get("content") or o.get("response")
            if a.mode == "stream" and text_part:
                rec["_token"] = True
            if o.get("done"):
                rec.update(prompt_tokens=o.get("prompt_eval_count"), completion_tokens=o.get("eval_count"))
        out.append(rec)
    return out


# ---------------------------------------------------------------- driver


def one_request(a, shared, local):
    r = Result()
    t0 = time.monotonic()
    client = None
    try:
        if a.client == "curl":
            run_curl(a, r, t0)
        else:
            client = make_client(a) if a.new_connection else shared or local_client(a, local)
            RUNNERS[a.api](client, a, r, t0)
            r.ok = True
    except Exception as exc:  # noqa: BLE001 - every failure is data for the summary
        r.error = error_name(exc)
    finally:
        if a.new_connection and client is not None:
            close_client(client)
    if a.client == "curl":
        r.ok = r.error is None
    r.latency_s = time.monotonic() - t0
    return r


def local_client(a, local):
    if not hasattr(local, "client"):
        local.client = make_client(a)
    return local.client


def summarize(a, results):
    errors = {}
    for r in results:
        if r.error:
            errors[r.error] = errors.get(r.error, 0) + 1
    total = lambda k: sum(getattr(r, k) or 0 for r in results)  # noqa: E731
    return {
        "api": a.api, "endpoint": a.endpoint, "mode": a.mode, "model": a.model, "client": a.client,
        "requests": len(results),
        "ok": sum(1 for r in results if r.ok and not r.cancelled),
        "errors": errors,
        "cancelled": sum(1 for r in results if r.cancelled),
        "prompt_tokens": total("prompt_tokens"),
        "cached_tokens": total("cached_tokens"),
        "completion_tokens": total("completion_tokens"),
        "usage_reported": sum(1 for r in results if r.completion_tokens is not None),
        "content_events": total("content_events"),
        "per_request": [r.as_dict() for r in results],
    }


def main(argv=None):
    a = parse_args(argv)
    # One shared client (its pool holds `concurrency` connections, or exactly one with --keepalive);
    # threads use it concurrently, which the SDK clients support.
    shared = None if a.new_connection or a.client == "curl" else make_client(a)
    local = threading.local()
    with ThreadPoolExecutor(max_workers=max(a.concurrency, 1)) as pool:
        results = list(pool.map(lambda _: one_request(a, shared, local), range(a.n)))
    if shared is not None:
        close_client(shared)
    print(json.dumps(summarize(a, results)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
