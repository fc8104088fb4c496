"""Write a lock file: exact pins for the dependency closure of some installed distributions.

The Docker image installs exactly these pins (``pip install --no-deps``), so the lock must
hold the whole closure and nothing else. The versions are the ones ``pip freeze`` reports
for this environment; the closure is walked through the installed packages' metadata, with
environment markers evaluated here (so run it with Python 3.11 on Linux, like the image).

    make lock    # from the repository root, runs:
    .venv/bin/python examples/deploy/lock.py llm-sidecar \
        > examples/deploy/requirements.lock
    .venv/bin/python examples/deploy/lock.py --for-app openai \
        > examples/deploy/app-requirements.lock
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, distribution

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

HEADERS = {
    "runtime": (
        "Exact pins for the runtime dependencies of llm-sidecar (the sidecar and the mock",
        "provider) and nothing else: the Dockerfile installs exactly these (pip --no-deps).",
    ),
    "app": (
        "Exact pins for the example app's image (Dockerfile target `app`): the openai SDK and",
        "its dependencies, installed on top of requirements.lock (pip --no-deps).",
    ),
}


def closure(roots: list[str]) -> set[str]:
    """Canonical names of every distribution *roots* need at run time (roots excluded)."""
    environment: dict[str, str] = dict(default_environment())
    found: set[str] = set()
    pending: list[tuple[str, frozenset[str]]] = [(root, frozenset()) for root in roots]
    seen: set[tuple[str, frozenset[str]]] = set()
    while pending:
        name, extras = pending.pop()
        if (canonicalize_name(name), extras) in seen:
            continue
        seen.add((canonicalize_name(name), extras))
        try:
            requirements = distribution(name).requires or []
        except PackageNotFoundError:
            sys.exit(f"lock: {name} is not installed in {sys.prefix}")
        for line in requirements:
            requirement = Requirement(line)
            marker = requirement.marker
            if marker is not None and not any(
                marker.evaluate({**environment, "extra": extra}) for extra in (extras or {""})
            ):
                continue
            found.add(canonicalize_name(requirement.name))
            pending.append((requirement.name, frozenset(requirement.extras)))
    return found


def frozen() -> dict[str, str]:
    """``pip freeze`` of this environment: canonical name -> the ``name==version`` line."""
    output = subprocess.run(
        [sys.executable, "-m", "pip", "freeze", "--exclude-editable"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    pins: dict[str, str] = {}
    for line in output.splitlines():
        if "==" in line:
            pins[canonicalize_name(line.split("==", 1)[0])] = line.strip()
    return pins


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("roots", nargs="+", help="installed distributions to lock for")
    parser.add_argument(
        "--for-app",
        action="store_true",
        help="lock the roots themselves too, minus what requirements.lock already pins",
    )
    args = parser.parse_args()
    names = closure(args.roots)
    if args.for_app:
        names |= {canonicalize_name(root) for root in args.roots}
        names -= closure(["llm-sidecar"])
    pins = frozen()
    missing = sorted(names - pins.keys())
    if missing:
        sys.exit(f"lock: not in pip freeze: {', '.join(missing)}")
    kind = "app" if args.for_app else "runtime"
    command = " ".join(
        ["examples/deploy/lock.py", *(["--for-app"] if args.for_app else []), *args.roots]
    )
    print(f"# {HEADERS[kind][0]}\n# {HEADERS[kind][1]}")
    print("# Regenerate after changing dependencies or upgrading .venv (docs/deploy.md):")
    print(f"#   make lock    (runs: .venv/bin/python {command})")
    print("# Markers were evaluated for Python 3.11 on Linux, the image's platform.")
    for name in sorted(names):
        print(pins[name])


if __name__ == "__main__":
    main()
