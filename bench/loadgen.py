"""Shared pieces of the benchmarks: start a server process pinned to a core, drive it."""

from __future__ import annotations

import asyncio
import os
import re
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Coroutine, Sequence
from typing import IO, Any, TypeVar

import aiohttp

T = TypeVar("T")


def cores() -> int:
    return os.cpu_count() or 1


def start(
    argv: Sequence[str], cpu: int | None, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[str], str]:
    """Start a server that prints ``http://host:port`` on its first stdout line."""
    pin = cpu is not None and cores() > 1
    process = subprocess.Popen(
        [sys.executable, *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, **(env or {})},
        preexec_fn=(lambda: os.sched_setaffinity(0, {cpu or 0})) if pin else None,
    )
    assert process.stdout is not None
    for _ in range(50):  # log lines may come before the address
        line = process.stdout.readline()
        match = re.search(r"listening on (http://[\d.]+:\d+)", line)
        if match:
            # Keep reading what it prints (a log line per request) so it never blocks on a
            # full pipe; the lines themselves are not needed.
            threading.Thread(target=_drain, args=(process.stdout,), daemon=True).start()
            return process, match.group(1)
        if not line:
            break
    process.kill()
    raise SystemExit(f"{argv[0:3]} did not start")


def _drain(stream: IO[str]) -> None:
    for _ in stream:
        pass


def stop(process: subprocess.Popen[str]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of *pid* (Linux /proc), to tell whether a server was busy."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def drive(
    url: str, body: bytes, seconds: float, concurrency: int, busy_pid: int, warmup: float = 1.0
) -> dict[str, float]:
    """Keep *concurrency* requests in flight for *seconds*; return rps and latency figures."""
    latencies: list[float] = []
    connector = aiohttp.TCPConnector(limit=concurrency)
    headers = {"Content-Type": "application/json"}
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker(until: float) -> None:
            while time.perf_counter() < until:
                start = time.perf_counter()
                async with session.post(url, data=body, headers=headers) as response:
                    await response.read()
                    if response.status != 200:
                        raise SystemExit(f"unexpected status {response.status} from {url}")
                latencies.append(time.perf_counter() - start)

        warm_until = time.perf_counter() + warmup
        await asyncio.gather(*(worker(warm_until) for _ in range(concurrency)))
        latencies.clear()
        cpu_before = cpu_seconds(busy_pid)
        until = time.perf_counter() + seconds
        await asyncio.gather(*(worker(until) for _ in range(concurrency)))
        busy = (cpu_seconds(busy_pid) - cpu_before) / seconds
    latencies.sort()
    return {
        "requests": len(latencies),
        "rps": round(len(latencies) / seconds, 1),
        "p50_ms": round(statistics.median(latencies) * 1000, 3),
        "p99_ms": round(latencies[max(0, int(len(latencies) * 0.99) - 1)] * 1000, 3),
        "server_cpu_busy": round(busy, 2),
    }


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run *coroutine* on uvloop when available (as the servers do)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        return asyncio.run(coroutine)
    return uvloop.run(coroutine)
