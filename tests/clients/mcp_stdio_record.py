#!/usr/bin/env python3
"""Runs a command with its stdin and stdout on pipes and relays them, recording every chunk that
crosses (direction, CLOCK_MONOTONIC ns, bytes as hex) as one JSON line per chunk in `--out`: the
bytes an observer of the command's fd 0 reads and fd 1 writes would see, in their real chunking.
Used to record tests/data fixtures of real MCP stdio sessions.

    mcp_stdio_record.py --out session.jsonl -- python mcp_stdio_server.py
"""

import argparse
import json
import os
import subprocess
import sys
import threading
import time


def pump(src, dst, direction, out, lock):
    while True:
        data = os.read(src, 65536)
        if not data:
            break
        with lock:
            out.write(json.dumps({"dir": direction, "ts": time.monotonic_ns(), "hex": data.hex()}) + "\n")
            out.flush()
        os.write(dst, data)
    if direction == "request":
        os.close(dst)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("cmd", nargs=argparse.REMAINDER)
    a = p.parse_args()
    cmd = a.cmd[1:] if a.cmd and a.cmd[0] == "--" else a.cmd
    child = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    lock = threading.Lock()
    with open(a.out, "w") as out:
        t_in = threading.Thread(target=pump, args=(sys.stdin.fileno(), child.stdin.fileno(), "request", out, lock))
        t_out = threading.Thread(target=pump, args=(child.stdout.fileno(), sys.stdout.fileno(), "response", out, lock))
        t_in.start()
        t_out.start()
        t_in.join()
        child.wait()
        t_out.join()


if __name__ == "__main__":
    main()
