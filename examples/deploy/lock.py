"""Write a lock file: exact pins, with their hashes, for the closure of installed distributions.

The Docker image installs exactly these pins (``pip install --no-deps --require-hashes
--only-binary=:all:``), so the lock must hold the whole closure and nothing else. The
versions are the ones ``pip freeze`` reports for this environment (the ones the tests ran
against); the closure is walked through the installed packages' metadata, with environment
markers evaluated here (so run it with Python 3.11 on Linux, like the image).

Each pin carries the sha256 of every wheel the image may install: CPython 3.11 on glibc
Linux (``IMAGE_GLIBC``, the base image's Debian release), for each of ``IMAGE_ARCHES``,
as the package index publishes them (PEP 691 JSON). A pin with no such wheel for one
architecture is refused: the image has no compiler and builds nothing from source.

    make lock    # from the repository root, runs:
    .venv/bin/python examples/deploy/lock.py llm-sidecar \
        > examples/deploy/requirements.lock
    .venv/bin/python examples/deploy/lock.py --for-app openai \
        > examples/deploy/app-requirements.lock
    .venv/bin/python examples/deploy/lock.py --build \
        > examples/deploy/build-requirements.lock
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tomllib
import urllib.request
from collections.abc import Iterable, Mapping
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path
from typing import Any

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.tags import Tag, compatible_tags, cpython_tags
from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename
from packaging.version import InvalidVersion, Version

ROOT = Path(__file__).resolve().parents[2]
INDEX = "https://pypi.org/simple"
# The base image (Dockerfile, PYTHON_IMAGE): CPython 3.11 on Debian trixie, glibc 2.41,
# built for amd64 and arm64. Change these with the base image.
IMAGE_PYTHON = (3, 11)
IMAGE_GLIBC = (2, 41)
IMAGE_ARCHES = ("x86_64", "aarch64")
HEADERS = {
    "runtime": (
        "Exact pins for the runtime dependencies of llm-sidecar (the sidecar and the mock",
        "provider) and nothing else: the Dockerfile installs exactly these (pip --no-deps).",
    ),
    "app": (
        "Exact pins for the example app's image (Dockerfile target `app`): the openai SDK and",
        "its dependencies, installed on top of requirements.lock (pip --no-deps).",
    ),
    "build": (
        "The build backend of pyproject.toml's [build-system], for the image's build stage",
        "only (pip wheel --no-build-isolation): never in a final image.",
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


def image_platforms(arch: str) -> list[str]:
    """The image's platform tags on *arch*: manylinux up to ``IMAGE_GLIBC``, newest first."""
    major, minor = IMAGE_GLIBC
    platforms = [f"manylinux_{major}_{glibc}_{arch}" for glibc in range(minor, 4, -1)]
    return [*platforms, f"manylinux2014_{arch}", f"manylinux2010_{arch}", f"manylinux1_{arch}"]


def image_tags(arch: str) -> frozenset[Tag]:
    """The wheel tags pip accepts in the image on *arch*."""
    abi = f"cp{IMAGE_PYTHON[0]}{IMAGE_PYTHON[1]}"
    platforms = image_platforms(arch)
    return frozenset(cpython_tags(IMAGE_PYTHON, [abi], platforms)) | frozenset(
        compatible_tags(IMAGE_PYTHON, abi, platforms)
    )


def index_project(name: str, index: str) -> Mapping[str, Any]:
    """The index's PEP 691 JSON page for *name*."""
    request = urllib.request.Request(
        f"{index.rstrip('/')}/{canonicalize_name(name)}/",
        headers={"Accept": "application/vnd.pypi.simple.v1+json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        page = json.load(response)
    if not isinstance(page, dict) or not isinstance(page.get("files"), list):
        sys.exit(f"lock: {index} gave no PEP 691 JSON page for {name}")
    return page


def wheel_hashes(pin: str, files: Iterable[Mapping[str, Any]]) -> list[str]:
    """The sha256 of each wheel of *pin* (``name==version``) that the image can install."""
    name, _, version = pin.partition("==")
    wanted = (canonicalize_name(name), Version(version))
    by_arch: dict[str, set[str]] = {arch: set() for arch in IMAGE_ARCHES}
    for file in files:
        try:
            wheel_name, wheel_version, _, tags = parse_wheel_filename(str(file["filename"]))
        except (InvalidWheelFilename, InvalidVersion):
            continue  # an sdist, or a file of some other kind
        if (wheel_name, wheel_version) != wanted:
            continue
        if file.get("yanked"):
            sys.exit(f"lock: {pin} is yanked on the index ({file['filename']})")
        digest = file.get("hashes", {}).get("sha256")
        if not digest:
            sys.exit(f"lock: the index gives no sha256 for {file['filename']}")
        for arch in IMAGE_ARCHES:
            if tags & image_tags(arch):
                by_arch[arch].add(digest)
    missing = [arch for arch, digests in by_arch.items() if not digests]
    if missing:
        sys.exit(f"lock: {pin} has no wheel for CPython 3.11 on Linux {', '.join(missing)}")
    return sorted(set().union(*by_arch.values()))


def build_pins(index: str) -> dict[str, str]:
    """The newest final release on the index satisfying each [build-system] requirement."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    pins: dict[str, str] = {}
    for requirement in map(Requirement, pyproject["build-system"]["requires"]):
        versions = [Version(v) for v in index_project(requirement.name, index)["versions"]]
        final = [v for v in versions if not v.is_prerelease and v in requirement.specifier]
        if not final:
            sys.exit(f"lock: no release on {index} satisfies {requirement}")
        pins[canonicalize_name(requirement.name)] = f"{requirement.name}=={max(final)}"
    return pins


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("roots", nargs="*", help="installed distributions to lock for")
    kinds = parser.add_mutually_exclusive_group()
    kinds.add_argument(
        "--for-app",
        action="store_true",
        help="lock the roots themselves too, minus what requirements.lock already pins",
    )
    kinds.add_argument(
        "--build", action="store_true", help="lock pyproject.toml's build backend instead"
    )
    parser.add_argument("--index", default=INDEX, help=f"PEP 691 package index ({INDEX})")
    args = parser.parse_args()
    if args.build:
        kind, pins = "build", build_pins(args.index)
        names = set(pins)
    else:
        if not args.roots:
            parser.error("name the distributions to lock for")
        kind = "app" if args.for_app else "runtime"
        names = closure(args.roots)
        if args.for_app:
            names |= {canonicalize_name(root) for root in args.roots}
            names -= closure(["llm-sidecar"])
        pins = frozen()
        missing = sorted(names - pins.keys())
        if missing:
            sys.exit(f"lock: not in pip freeze: {', '.join(missing)}")
    flags = {"app": ["--for-app"], "build": ["--build"], "runtime": []}[kind]
    command = " ".join(["examples/deploy/lock.py", *flags, *args.roots])
    print(f"# {HEADERS[kind][0]}\n# {HEADERS[kind][1]}")
    print("# Regenerate after changing dependencies or upgrading .venv (docs/deploy.md):")
    print(f"#   make lock    (runs: .venv/bin/python {command})")
    print("# Markers were evaluated for Python 3.11 on Linux, the image's platform.")
    print(f"# Hashes: every wheel of the pin the image can install, from {args.index}.")
    for name in sorted(names):
        pin = pins[name]
        digests = wheel_hashes(pin, index_project(name, args.index)["files"])
        print(" \\\n    ".join([pin, *(f"--hash=sha256:{digest}" for digest in digests)]))


if __name__ == "__main__":
    main()
