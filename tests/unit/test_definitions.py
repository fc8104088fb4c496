"""Shared definitions stand in one module each (docs/architecture.md, "Defined once")."""

from __future__ import annotations

import ast
from collections.abc import Callable
from pathlib import Path

import pytest

import sidecar

ROOT = Path(sidecar.__file__).parent


def _literal_dict(node: ast.AST, key: type, value: str) -> bool:
    return isinstance(node, ast.Dict) and any(
        isinstance(k, ast.Constant) and isinstance(k.value, key) and ast.literal_eval(v) == value
        for k, v in zip(node.keys, node.values, strict=True)
        if isinstance(v, ast.Constant)
    )


DEFINITIONS: dict[str, tuple[str, Callable[[ast.AST], bool]]] = {
    "the JSON alias": (
        "typedefs.py",
        lambda node: (
            isinstance(node, ast.Assign) and ast.unparse(node.value) == "dict[str, object]"
        ),
    ),
    "the WireFormat literal": (
        "typedefs.py",
        lambda node: (
            isinstance(node, ast.Assign)
            and ast.unparse(node.value) == "Literal['openai', 'anthropic']"
        ),
    ),
    "the stop reason tables (both ways)": (
        "providers/formats.py:2",
        lambda node: _literal_dict(node, str, "end_turn") or _literal_dict(node, str, "stop"),
    ),
    "the Anthropic error type table": (
        "providers/formats.py",
        lambda node: _literal_dict(node, int, "overloaded_error"),
    ),
    "an SSE event writer": (
        "streaming/sse.py",
        lambda node: isinstance(node, ast.Constant) and node.value == b"data: ",
    ),
}


@pytest.mark.parametrize("what", DEFINITIONS)
def test_defined_once(what: str) -> None:
    home, matches = DEFINITIONS[what]
    name, _, times = home.partition(":")
    places = []
    for path in sorted(ROOT.rglob("*.py")):
        tree = ast.parse(path.read_text())
        count = sum(1 for node in ast.walk(tree) if matches(node))
        places += [str(path.relative_to(ROOT))] * count
    assert places == [name] * int(times or 1)
