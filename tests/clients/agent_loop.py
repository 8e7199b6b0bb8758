#!/usr/bin/env python3
"""An agent's tool loop with the official Python clients, for llm-observer's agent tests.

Each turn asks the model (the emulator with model `tools`, which answers with a call of the first
offered tool) for a tool call, "runs" the tool by sleeping `--wait-ms`, and sends the tool's result
back in the next request, which the model answers with text. Prints one JSON line on stdout:

    {"api": ..., "turns": N, "requests": 2N, "tool_calls": N, "ids": [...], "tool": "get_weather",
     "slept_s": [...], "gap_s": [...]}

`slept_s` is what each `time.sleep` took; `gap_s` is the client's own monotonic time from the
moment the tool-call response was complete (the SDK returned it, or its stream ended) to just
before the result request was handed to the SDK. The observer's tool execution time runs from the
response's last byte read to the result request's first byte written, so it is at least `slept_s`.

Examples:
    agent_loop.py --base-url http://127.0.0.1:PORT --api openai --mode stream --turns 3 --wait-ms 300
    agent_loop.py --base-url ... --api anthropic --mode nonstream --turns 2 --wait-ms 200

SDK retries are off and proxies are ignored: one turn is exactly two HTTP requests to the base URL.
"""

from __future__ import annotations

import argparse
import json
import sys
import time



def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base-url", required=True)
    p.add_argument("--api", required=True, choices=["openai", "anthropic"])
    p.add_argument("--mode", choices=["stream", "nonstream"], default="nonstream")
    p.add_argument("--turns", type=int, default=1)
    p.add_argument("--wait-ms", type=int, default=200, help="how long the tool 'runs'")
    p.add_argument("--model", default="tools")
    p.add_argument("--max-tokens", type=int, default=4)
    p.add_argument("--tool", default="get_weather", help="the one tool offered (the emulator calls it)")
    return p.parse_args(argv)


def openai_turns(args):
    import openai

    client = openai.OpenAI(base_url=args.base_url + "/v1", api_key="sk-test", max_retries=0,
                           http_client=openai.DefaultHttpxClient(trust_env=False))
    tools = [{"type": "function", "function": {"name": args.tool, "description": "Weather of a city",
                                               "parameters": {"type": "object", "properties": {}}}}]
    stream = args.mode == "stream"

    def ask(messages):
        """One request; returns (tool call ids and names, the assistant message to echo)."""
        if not stream:
            r = client.chat.completions.create(model=args.model, messages=messages, tools=tools,
                                               max_tokens=args.max_tokens)
            msg = r.choices[0].message
            calls = [(c.id, c.function.name) for c in (msg.tool_calls or [])]
            return calls, msg.content
        calls, text = {}, []
        for chunk in client.chat.completions.create(model=args.model, messages=messages, tools=tools,
                                                    max_tokens=args.max_tokens, stream=True):
            for choice in chunk.choices:
                d = choice.delta
                if d.content:
                    text.append(d.content)
                for tc in d.tool_calls or []:
                    if tc.id:
                        calls[tc.index] = (tc.id, tc.function.name)
        return [calls[i] for i in sorted(calls)], "".join(text)

    return run(args, ask, openai_followup)


def openai_followup(messages, calls, text):
    messages.append({"role": "assistant", "content": text or None, "tool_calls": [
        {"id": cid, "type": "function", "function": {"name": name, "arguments": "{}"}} for cid, name in calls]})
    for cid, _ in calls:
        messages.append({"role": "tool", "tool_call_id": cid, "content": "sunny"})


def anthropic_turns(args):
    import anthropic

    client = anthropic.Anthropic(base_url=args.base_url, api_key="sk-ant-test", max_retries=0,
                                 http_client=anthropic.DefaultHttpxClient(trust_env=False))
    tools = [{"name": args.tool, "description": "Weather of a city", "input_schema": {"type": "object", "properties": {}}}]
    stream = args.mode == "stream"

    def ask(messages):
        if not stream:
            m = client.messages.create(model=args.model, messages=messages, tools=tools, max_tokens=args.max_tokens)
        else:
            with client.messages.stream(model=args.model, messages=messages, tools=tools,
                                        max_tokens=args.max_tokens) as s:
                for _ in s:
                    pass
                m = s.get_final_message()
        calls = [(b.id, b.name) for b in m.content if b.type == "tool_use"]
        text = "".join(b.text for b in m.content if b.type == "text")
        return calls, text

    return run(args, ask, anthropic_followup)


def anthropic_followup(messages, calls, text):
    blocks = ([{"type": "text", "text": text}] if text else []) + [
        {"type": "tool_use", "id": cid, "name": name, "input": {}} for cid, name in calls]
    messages.append({"role": "assistant", "content": blocks})
    messages.append({"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": cid, "content": "sunny"} for cid, _ in calls]})


def run(args, ask, followup):
    summary = {"api": args.api, "mode": args.mode, "turns": args.turns, "requests": 0, "tool_calls": 0,
               "ids": [], "tool": args.tool, "slept_s": [], "gap_s": []}
    messages = [{"role": "user", "content": "What is the weather in Paris?"}]
    for _ in range(args.turns):
        calls, text = ask(messages)
        done = time.monotonic()
        summary["requests"] += 1
        if not calls:
            raise SystemExit(f"the model asked for no tool call: {text!r}")
        summary["tool_calls"] += len(calls)
        summary["ids"] += [cid for cid, _ in calls]
        t0 = time.monotonic()
        time.sleep(args.wait_ms / 1000)
        summary["slept_s"].append(time.monotonic() - t0)
        followup(messages, calls, text)
        summary["gap_s"].append(time.monotonic() - done)
        # The model answers the result with text: the conversation goes on from there.
        _, answer = ask(messages)
        summary["requests"] += 1
        messages.append({"role": "assistant", "content": answer})
        messages.append({"role": "user", "content": "And tomorrow?"})
    return summary


def main(argv):
    args = parse_args(argv)
    summary = openai_turns(args) if args.api == "openai" else anthropic_turns(args)
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
