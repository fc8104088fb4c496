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
import asyncio
import os
import re
import statistics
import subprocess
import sys
import time

import aiohttp
import orjson

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


def start_server() -> tuple[subprocess.Popen[str], str]:
    cores = os.cpu_count() or 1
    server = subprocess.Popen(
        [sys.executable, "-m", "mock_provider", "--port", "0", "--name", "bench"],
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=(lambda: os.sched_setaffinity(0, {0})) if cores > 1 else None,
    )
    assert server.stdout is not None
    line = server.stdout.readline()
    match = re.search(r"http://[\d.]+:\d+", line)
    if not match:
        server.kill()
        raise SystemExit(f"mock provider did not start: {line!r}")
    if cores > 1:
        os.sched_setaffinity(0, {1})
    return server, match.group(0)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of *pid* (Linux /proc), to tell whether the server was busy."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def drive(
    url: str, body: bytes, seconds: float, concurrency: int, pid: int
) -> tuple[list[float], float]:
    latencies: list[float] = []
    connector = aiohttp.TCPConnector(limit=concurrency)
    headers = {"Content-Type": "application/json"}
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one() -> None:
            start = time.perf_counter()
            async with session.post(url, data=body, headers=headers) as response:
                await response.read()
                if response.status != 200:
                    raise SystemExit(f"unexpected status {response.status}")
            latencies.append(time.perf_counter() - start)

        async def worker(until: float) -> None:
            while time.perf_counter() < until:
                await one()

        warm_until = time.perf_counter() + 1.0
        await asyncio.gather(*(worker(warm_until) for _ in range(concurrency)))
        latencies.clear()
        cpu_before = cpu_seconds(pid)
        until = time.perf_counter() + seconds
        await asyncio.gather(*(worker(until) for _ in range(concurrency)))
        busy = (cpu_seconds(pid) - cpu_before) / seconds
    return latencies, busy


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
    server, base = start_server()
    try:
        try:
            import uvloop
        except ImportError:  # pragma: no cover
            run = asyncio.run
        else:
            run = uvloop.run
        latencies, busy = run(drive(base + path, body, args.seconds, args.concurrency, server.pid))
    finally:
        server.terminate()
        server.wait(timeout=10)
    latencies.sort()
    result = {
        "path": path,
        "stream": args.stream,
        "concurrency": args.concurrency,
        "seconds": args.seconds,
        "requests": len(latencies),
        "rps": round(len(latencies) / args.seconds, 1),
        "p50_ms": round(statistics.median(latencies) * 1000, 2),
        "p99_ms": round(latencies[int(len(latencies) * 0.99) - 1] * 1000, 2),
        "server_cpus": 1 if (os.cpu_count() or 1) > 1 else "shared",
        "server_cpu_busy": round(busy, 2),  # ~1.0: the server core was saturated
    }
    print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
    if args.json:
        with open(args.json, "wb") as out:
            out.write(orjson.dumps(result, option=orjson.OPT_INDENT_2))


if __name__ == "__main__":
    main()
