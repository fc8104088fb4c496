"""Mutated policy files never crash the loader.

Starting from the shipped policies, hypothesis deletes keys, changes types,
swaps values, inserts garbage, truncates and sprinkles random bytes. The
loader either accepts the result (and ``sidecar check`` agrees) or raises a
PolicyError whose issues name the file (and a line where there is one). Any
other exception is a bug.
"""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from sidecar.policy.errors import PolicyError
from sidecar.policy.loader import load_files
from sidecar.policy.model import PolicySet

ROOT = Path(__file__).resolve().parents[2]
SEEDS = {
    path.name: path.read_bytes()
    for path in [
        ROOT / "policies" / "default.yaml",
        *sorted((ROOT / "examples/policies").glob("*.yaml")),
    ]
}
NAME = "fuzzed.yaml"

garbage = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=20)
    | st.just({"x": [1, {"y": None}]})
)


def load(raw: bytes) -> PolicySet | None:
    """Load *raw* as one policy file; None when refused with well-located issues."""
    try:
        return load_files([(NAME, raw)], {})
    except PolicyError as error:
        issues = error.issues
    assert issues
    for issue in issues:
        assert NAME in issue.file, issue
        assert issue.line >= 0, issue
        assert issue.column >= 0, issue
        assert issue.message, issue
        str(issue)  # renders
    return None


def paths(tree: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(tree, dict):
        for key, value in tree.items():
            found += paths(value, (*prefix, key))
    elif isinstance(tree, list):
        for index, value in enumerate(tree):
            found += paths(value, (*prefix, index))
    return found


def mutate(tree: Any, path: tuple[Any, ...], action: str, value: Any, other: Any) -> Any:
    value = copy.deepcopy(value)  # st.just() hands out one object: never share it
    if not path:
        return value if action != "delete" else {}
    parent = tree
    for part in path[:-1]:
        parent = parent[part]
    last = path[-1]
    if action == "delete":
        del parent[last]
    elif action == "replace":
        parent[last] = value
    elif action == "swap":
        parent[last] = copy.deepcopy(other)  # a copy: a subtree put inside itself is a cycle
    elif action == "wrap":
        parent[last] = [parent[last]]
    return tree


@given(
    seed=st.sampled_from(sorted(SEEDS)),
    picks=st.lists(
        st.tuples(
            st.integers(min_value=0),
            st.sampled_from(["delete", "replace", "swap", "wrap"]),
            garbage,
            st.integers(min_value=0),
        ),
        min_size=1,
        max_size=4,
    ),
)
def test_structural_mutations(seed: str, picks: list[tuple[int, str, Any, int]]) -> None:
    tree = yaml.safe_load(SEEDS[seed])
    for where, action, value, pick_other in picks:
        found = paths(tree)
        path = found[where % len(found)]
        other_path = found[pick_other % len(found)]
        other: Any = tree
        for part in other_path:
            other = other[part]
        if isinstance(tree, dict | list):
            tree = mutate(tree, path, action, value, other)
    load(yaml.safe_dump(tree, allow_unicode=True).encode())


@given(
    seed=st.sampled_from(sorted(SEEDS)),
    cut=st.integers(min_value=0),
    position=st.integers(min_value=0),
    inserted=st.binary(max_size=20)
    | st.sampled_from(
        [
            b"\t",
            b": ",
            b"- ",
            b"&a ",
            b"*a",
            b"!!python/object:os.system ",
            b"{",
            b"[",
            b"'",
            b'"',
            b"${",
            b"${X:-",
            b"\n  ",
            b"<<: *a\n",
            b"---\n",
        ]
    ),
)
def test_byte_mutations(seed: str, cut: int, position: int, inserted: bytes) -> None:
    raw = SEEDS[seed]
    at = position % (len(raw) + 1)
    load(raw[:at] + inserted + raw[at:])
    load(raw[: cut % (len(raw) + 1)])


@given(raw=st.binary(max_size=300))
def test_random_bytes(raw: bytes) -> None:
    load(raw)


def billion_laughs(levels: int) -> bytes:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for level in range(1, levels):
        refs = ", ".join([f"*a{level - 1}"] * 9)
        lines.append(f"a{level}: &a{level} [{refs}]")
    return ("\n".join(lines) + "\n").encode()


NASTY = {
    "billion-laughs": billion_laughs(10),
    "recursive-alias": b"a: &a [*a]\n",
    "deep-flow": b"version: " + b"[" * 20_000 + b"]" * 20_000 + b"\n",
    "deep-block": "".join(f"{' ' * i}k{i}:\n" for i in range(600)).encode(),
    "huge-file": b"version: 1\n" + b"# padding\n" * 400_000,
    "many-keys": b"".join(b"k%d: %d\n" % (i, i) for i in range(5_000)),
    "python-tag": b"version: !!python/object/apply:os.system ['true']\n",
    "bad-timestamp": b"version: 2024-13-45\n",
    "utf16": "version: 1\n".encode("utf-16"),
    "nul": b"version: 1\x00\n",
    "two-documents": b"version: 1\n---\nversion: 1\n",
}


CORPUS = {
    path.name: path.read_bytes()
    for path in sorted((Path(__file__).parent / "corpus" / "policy").iterdir())
}


@pytest.mark.parametrize("name", sorted(NASTY))
def test_nasty_files(name: str) -> None:
    load(NASTY[name])


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_policy_corpus(name: str) -> None:
    """Files that once crashed the loader (RecursionError, an alias bomb that never ended)."""
    load(CORPUS[name])


def test_check_command_agrees(tmp_path: Path) -> None:
    """A sample: ``sidecar check`` exits 0 exactly when load_files accepts."""
    samples = {
        "valid": SEEDS["default.yaml"],
        "truncated": SEEDS["default.yaml"][:300],
        "bad-type": SEEDS["default.yaml"].replace(b"attempts: 3", b"attempts: three"),
    }
    for name, raw in samples.items():
        directory = tmp_path / name
        directory.mkdir()
        (directory / NAME).write_bytes(raw)
        accepted = load(raw) is not None
        done = subprocess.run(
            [sys.executable, "-m", "sidecar", "check", str(directory)],
            capture_output=True,
            env={"PATH": "/usr/bin:/bin"},
            cwd=ROOT,
            timeout=60,
            check=False,
        )
        assert (done.returncode == 0) == accepted, (name, done.stdout, done.stderr)
        assert b"Traceback" not in done.stderr
