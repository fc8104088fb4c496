"""Throughput of the mock provider's happy path, server pinned to one core.

    python bench/mock_rps.py [--seconds 10] [--concurrency 32] [--path openai|anthropic]
                             [--stream] [--json out.json]

Starts ``mock-provider`` as a subprocess pinned to CPU 0 (when the machine has
two or more cores) and drives it from this process, pinned to CPU 1, with
keep-alive aiohttp connections. Prints requests/s and latency percentiles.
The client is Python too, so the figure is a lower bound for the server.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from loadgen import drive, run, start, stop

BODIES = {
    "openai": (
        "/v1/chat/completions",
        {"model": "gpt-4o", "messages": [{"role": "user", "content": "Say hello"}]},
    ),
    "anthropic": (
        "/v1/messages",
        {
            "model": "claude-sonnet-4-6",
            "max_tokens": 256,
            "messages": [{"role": "user", "content": "Say hello"}],
        },
    ),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--path", choices=sorted(BODIES), default="openai")
    parser.add_argument("--stream", action="store_true")
    parser.add_argument("--json", help="also write the result as JSON to this file")
    args = parser.parse_args()
    path, payload = BODIES[args.path]
    body = orjson.dumps({**payload, "stream": args.stream})
    server, base = start(["-m", "mock_provider", "--port", "0", "--name", "bench"], cpu=0)
    if (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {1})
    try:
        figures = run(drive(base + path, body, args.seconds, args.concurrency, server.pid))
    finally:
        stop(server)
    result = {
        "path": path,
        "stream": args.stream,
        "concurrency": args.concurrency,
        "seconds": args.seconds,
        "server_cpus": 1 if (os.cpu_count() or 1) > 1 else "shared",
        **figures,  # server_cpu_busy ~1.0: the server core was saturated
    }
    print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
    if args.json:
        Path(args.json).write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))


if __name__ == "__main__":
    main()
