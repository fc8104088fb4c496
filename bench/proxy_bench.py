"""Direct-to-mock vs bare aiohttp pass-through vs the sidecar (default policy).

    python bench/proxy_bench.py [--seconds 6] [--concurrency 32] [--rounds 3] [--json out.json]

The proxy under test (pass-through or sidecar) is pinned to CPU 0; the mock
provider and this load generator share CPU 1. The pass-through and the sidecar
are measured in alternating rounds (the machine's noise hits both alike); each
round measures throughput at the given concurrency and latency at
concurrency 1. The report keeps the median round of each.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from loadgen import drive, run, start, stop

ROOT = Path(__file__).resolve().parent.parent
BODY = orjson.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": "Say hello"}]})
PATH = "/v1/chat/completions"


def measure(base: str, pid: int, seconds: float, concurrency: int) -> dict[str, float]:
    loaded = run(drive(base + PATH, BODY, seconds, concurrency, pid))
    single = run(drive(base + PATH, BODY, seconds / 2, 1, pid, warmup=0.5))
    return {
        "rps": loaded["rps"],
        "p50_ms": loaded["p50_ms"],
        "p99_ms": loaded["p99_ms"],
        "cpu_busy": loaded["server_cpu_busy"],
        "c1_p50_ms": single["p50_ms"],
        "c1_p99_ms": single["p99_ms"],
    }


def median_round(rounds: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", help="also write the results as JSON to this file")
    args = parser.parse_args()
    if (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {1})
    seconds, concurrency = args.seconds, args.concurrency
    mock, mock_url = start(["-m", "mock_provider", "--port", "0", "--name", "openai"], cpu=1)
    proxies = {
        "bare aiohttp pass-through": (
            [str(ROOT / "bench" / "passthrough.py"), "--upstream", mock_url],
            None,
        ),
        "sidecar, default policy": (
            [
                *("-m", "sidecar", "run", "--port", "0", "--admin-port", "0"),
                *("--policies", str(ROOT / "policies")),
            ],
            {"OPENAI_URL": mock_url},
        ),
    }
    rounds: dict[str, list[dict[str, float]]] = {name: [] for name in proxies}
    try:
        direct = measure(mock_url, mock.pid, seconds, concurrency)
        for _ in range(args.rounds):
            for name, (argv, env) in proxies.items():
                process, url = start(argv, cpu=0, env=env)
                try:
                    rounds[name].append(measure(url, process.pid, seconds, concurrency))
                finally:
                    stop(process)
    finally:
        stop(mock)
    results = [{"target": "direct to the mock", **direct}]
    results += [{"target": name, **median_round(rounds[name])} for name in proxies]
    bare, sidecar = results[1], results[2]
    summary = {
        "concurrency": concurrency,
        "seconds": seconds,
        "rounds": args.rounds,
        "results": results,
        "sidecar_rps_vs_passthrough": round(float(sidecar["rps"]) / float(bare["rps"]), 3),
        "sidecar_added_p50_ms_at_c1": round(
            float(sidecar["c1_p50_ms"]) - float(bare["c1_p50_ms"]), 3
        ),
        "all_rounds": rounds,
    }
    print(orjson.dumps(summary, option=orjson.OPT_INDENT_2).decode())
    if args.json:
        Path(args.json).write_bytes(orjson.dumps(summary, option=orjson.OPT_INDENT_2))


if __name__ == "__main__":
    main()
