"""``make health``: every service of the local stack (or compose) and whether it answers.

    python -m sidecar.health [--json]

URLs come from the environment (defaults: the local stack of ``make run``):
SIDECAR_URL, SIDECAR_ADMIN_URL, OPENAI_MOCK_URL, ANTHROPIC_MOCK_URL, PROMETHEUS_URL
(the last one is checked only when set). Exit 0 when all answer, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence

CHECKS = (
    ("sidecar", "SIDECAR_URL", "http://127.0.0.1:8080", "/health"),
    ("sidecar (ready)", "SIDECAR_ADMIN_URL", "http://127.0.0.1:8081", "/ready"),
    ("mock-openai", "OPENAI_MOCK_URL", "http://127.0.0.1:8001", "/health"),
    ("mock-anthropic", "ANTHROPIC_MOCK_URL", "http://127.0.0.1:8002", "/health"),
    ("prometheus", "PROMETHEUS_URL", "", "/-/healthy"),
)


def probe(url: str) -> tuple[str, str]:
    """(status, detail) of one GET."""
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            body = response.read(300).decode("utf-8", "replace").strip()
            return str(response.status), body
    except urllib.error.HTTPError as error:
        return str(error.code), error.read(300).decode("utf-8", "replace").strip()
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        return "down", str(reason)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="health", description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    rows = []
    for name, variable, default, path in CHECKS:
        base = os.environ.get(variable, default)
        if not base:
            continue
        status, detail = probe(base.rstrip("/") + path)
        rows.append({"service": name, "url": base + path, "status": status, "detail": detail})
    healthy = all(row["status"] == "200" for row in rows)
    if args.json:
        print(json.dumps({"healthy": healthy, "services": rows}, indent=2))
    else:
        width = max(len(row["service"]) for row in rows)
        for row in rows:
            mark = "ok  " if row["status"] == "200" else "FAIL"
            print(f"{mark} {row['service']:<{width}}  {row['status']:>4}  {row['url']}")
        print("all services healthy" if healthy else "some services are not healthy")
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
