"""``make audit``: pip-audit on the image's lock files, with an answer that says which case it is.

Exit 0: no known vulnerability. Exit 1: vulnerabilities found (pip-audit's table above).
Exit 2: no answer: the vulnerability service (PyPI's JSON API, or OSV with
``--service osv``) could not be reached, or does not know a pinned version.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent
LOCKS = (HERE / "requirements.lock", HERE / "app-requirements.lock")
UNREACHABLE = (
    "ConnectionError",
    "NameResolutionError",
    "Max retries exceeded",
    "could not be audited",
    "Failed to establish a new connection",
)


def main(argv: list[str]) -> int:
    service = (
        ["--vulnerability-service", argv[argv.index("--service") + 1]]
        if "--service" in argv
        else []
    )
    command = [sys.executable, "-m", "pip_audit", "--strict", "--no-deps", "--disable-pip",
               "--progress-spinner", "off", *service]  # fmt: skip
    for lock in LOCKS:
        command += ["--requirement", str(lock)]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    sys.stdout.write(result.stdout)
    if result.returncode == 0:
        print(f"audit: no known vulnerability in {', '.join(lock.name for lock in LOCKS)}")
        return 0
    problems = [line for line in result.stderr.splitlines() if any(s in line for s in UNREACHABLE)]
    if problems:
        print(
            "audit: NO RESULT: the vulnerability service could not be reached from here, or "
            "does not know a pinned version:\n  " + "\n  ".join(problems[-3:]),
            file=sys.stderr,
        )
        return 2
    sys.stderr.write(result.stderr)
    print("audit: vulnerabilities found (above); see docs/security.md", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
