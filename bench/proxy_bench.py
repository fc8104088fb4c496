"""Direct-to-mock vs bare aiohttp pass-through vs the sidecar (default policy).

    python bench/proxy_bench.py [--seconds 10] [--concurrency 32] [--json out.json]

The proxy under test (pass-through or sidecar) is pinned to CPU 0; the mock
provider and this load generator share CPU 1. Each proxy is measured at the
given concurrency (throughput) and at concurrency 1 (added latency).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from loadgen import drive, run, start, stop

ROOT = Path(__file__).resolve().parent.parent
BODY = orjson.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": "Say hello"}]})
PATH = "/v1/chat/completions"


def measure(name: str, base: str, pid: int, seconds: float, concurrency: int) -> dict[str, object]:
    loaded = run(drive(base + PATH, BODY, seconds, concurrency, pid))
    single = run(drive(base + PATH, BODY, seconds / 2, 1, pid))
    return {
        "target": name,
        "rps": loaded["rps"],
        "p50_ms": loaded["p50_ms"],
        "p99_ms": loaded["p99_ms"],
        "cpu_busy": loaded["server_cpu_busy"],
        "c1_p50_ms": single["p50_ms"],
        "c1_p99_ms": single["p99_ms"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--json", help="also write the results as JSON to this file")
    args = parser.parse_args()
    if (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {1})
    mock, mock_url = start(["-m", "mock_provider", "--port", "0", "--name", "openai"], cpu=1)
    results = []
    try:
        results.append(
            measure("direct to the mock", mock_url, mock.pid, args.seconds, args.concurrency)
        )
        bare, bare_url = start(
            [str(ROOT / "bench" / "passthrough.py"), "--upstream", mock_url], cpu=0
        )
        try:
            results.append(
                measure(
                    "bare aiohttp pass-through", bare_url, bare.pid, args.seconds, args.concurrency
                )
            )
        finally:
            stop(bare)
        sidecar, sidecar_url = start(
            ["-m", "sidecar", "run", "--port", "0", "--policies", str(ROOT / "policies")],
            cpu=0,
            env={"OPENAI_URL": mock_url},
        )
        try:
            results.append(
                measure(
                    "sidecar, default policy",
                    sidecar_url,
                    sidecar.pid,
                    args.seconds,
                    args.concurrency,
                )
            )
        finally:
            stop(sidecar)
    finally:
        stop(mock)
    bare_rps = float(results[1]["rps"])  # type: ignore[arg-type]
    sidecar_rps = float(results[2]["rps"])  # type: ignore[arg-type]
    summary = {
        "concurrency": args.concurrency,
        "seconds": args.seconds,
        "results": results,
        "sidecar_rps_vs_passthrough": round(sidecar_rps / bare_rps, 3),
        "sidecar_added_p50_ms_at_c1": round(
            float(results[2]["c1_p50_ms"]) - float(results[1]["c1_p50_ms"]),
            3,  # type: ignore[arg-type]
        ),
    }
    print(orjson.dumps(summary, option=orjson.OPT_INDENT_2).decode())
    if args.json:
        Path(args.json).write_bytes(orjson.dumps(summary, option=orjson.OPT_INDENT_2))


if __name__ == "__main__":
    main()
