#!/usr/bin/env python3
"""An HTTPS client already running (and connected) when the agent starts: tests/tls.rs.

    tls_waiting_client.py BASE_URL CACERT MODEL N [fresh]

Makes one chat call with the official OpenAI SDK (CPython's ssl, so libssl.so.3) on a
single-connection pool (none with `fresh`: then only its TLS library is loaded), prints `ready`,
waits for SIGUSR1, then makes N more calls on the same connection and prints one JSON line
{"ok": .., "prompt_tokens": .., "completion_tokens": ..} for those N.
"""

import json
import signal
import ssl
import sys

import httpx2
import openai


def main():
    base, cacert, model, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    fresh = sys.argv[5:] == ["fresh"]
    # Blocked before anything else, so a signal sent at any time after `ready` is waited for.
    signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGUSR1])
    http = openai.DefaultHttpxClient(
        limits=httpx2.Limits(max_connections=1, max_keepalive_connections=1),
        trust_env=False, timeout=60, verify=ssl.create_default_context(cafile=cacert))
    client = openai.OpenAI(base_url=base.rstrip("/") + "/v1", api_key="sk-emulator",
                           max_retries=0, timeout=60, http_client=http)

    def call():
        return client.chat.completions.create(
            model=model, max_tokens=8,
            messages=[{"role": "user", "content": "Why is the sky blue?"}])

    if not fresh:
        call()
    print("ready", flush=True)
    signal.sigwait([signal.SIGUSR1])
    ok = prompt = completion = 0
    for _ in range(n):
        r = call()
        ok += 1
        prompt += r.usage.prompt_tokens
        completion += r.usage.completion_tokens
    print(json.dumps({"ok": ok, "prompt_tokens": prompt, "completion_tokens": completion}), flush=True)


if __name__ == "__main__":
    main()
