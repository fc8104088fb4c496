"""``make audit``: pip-audit on the image's lock files, with an answer that says which case it is.

Exit 0: no known vulnerability. Exit 1: vulnerabilities found (pip-audit's table above).
Exit 2: no answer: the vulnerability service (PyPI's JSON API, or OSV with
``--service osv``) could not be reached, or does not know a pinned version, or a lock
file is not fully hashed (pip-audit runs with ``--require-hashes``, like the image).

When pip-audit gets no answer because PyPI's per-release endpoint
(``/pypi/<name>/<version>/json``) is not served — as behind some mirrors and
proxies — the audit asks the project endpoint (``/pypi/<name>/json``) instead.
Its ``vulnerabilities`` are those of the latest release, so they answer for a
pin that *is* the latest release; a pin behind the latest is reported as not
audited (exit 2), never as clean.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

HERE = Path(__file__).parent
LOCKS = tuple(
    HERE / name
    for name in ("requirements.lock", "app-requirements.lock", "build-requirements.lock")
)
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
    command = [sys.executable, "-m", "pip_audit", "--strict", "--require-hashes", "--disable-pip",
               "--progress-spinner", "off", *service]  # fmt: skip
    for lock in LOCKS:
        command += ["--requirement", str(lock)]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    sys.stdout.write(result.stdout)
    if result.returncode == 0:
        print(f"audit: no known vulnerability in {', '.join(lock.name for lock in LOCKS)}")
        return 0
    if "invalid requirements input" in result.stderr:
        sys.stderr.write(result.stderr)
        print("audit: NO RESULT: a lock file is not fully pinned and hashed: run `make lock`",
              file=sys.stderr)  # fmt: skip
        return 2
    problems = [line for line in result.stderr.splitlines() if any(s in line for s in UNREACHABLE)]
    if problems and not service:
        return project_endpoint_audit()
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


def pins() -> list[tuple[str, str]]:
    found: dict[str, str] = {}
    for lock in LOCKS:
        for line in lock.read_text().splitlines():
            match = re.match(r"^([A-Za-z0-9_.-]+)==([^\s;#]+)", line.strip())
            if match:
                found[match.group(1).lower()] = match.group(2)
    return sorted(found.items())


def project_endpoint_audit() -> int:
    """The fallback: PyPI's project endpoint, which knows the latest release's vulnerabilities."""
    vulnerable, unaudited, clean = [], [], 0
    for name, version in pins():
        url = f"https://pypi.org/pypi/{name}/json"
        try:
            with urllib.request.urlopen(url, timeout=20) as response:
                data = json.load(response)
        except (urllib.error.URLError, TimeoutError, ValueError) as exc:
            unaudited.append(f"{name}=={version}: {url} did not answer ({exc})")
            continue
        latest = data["info"]["version"]
        if latest != version:
            unaudited.append(f"{name}=={version}: not the latest release ({latest}); "
                             "its vulnerabilities are not published at this endpoint")  # fmt: skip
            continue
        found = data.get("vulnerabilities") or []
        if found:
            ids = ", ".join(v.get("id", "?") for v in found)
            vulnerable.append(f"{name}=={version}: {ids}")
        else:
            clean += 1
    print(f"audit (PyPI project endpoint; per-release endpoint not served here): "
          f"{clean} pin(s) with no known vulnerability")  # fmt: skip
    for line in vulnerable:
        print(f"  VULNERABLE {line}")
    for line in unaudited:
        print(f"  NOT AUDITED {line}")
    if vulnerable:
        return 1
    return 2 if unaudited else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
