"""docs/errors.md lists every error the sidecar itself answers with, as it answers it."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

import sidecar
from sidecar.errors import SidecarError
from sidecar.providers.formats import anthropic_error_type

CATALOGUE = Path(__file__).parents[2] / "docs" / "errors.md"
ROW = re.compile(r"^\|\s*(\d{3})\s*\|\s*`([a-z_]+)`\s*\|\s*`([a-z_]+)`\s*\|\s*`([a-z_]+)`\s*\|")


def _every_error() -> list[type[SidecarError]]:
    """SidecarError and every subclass, after importing every sidecar module."""
    root = Path(sidecar.__file__).parent
    for path in sorted(root.rglob("*.py")):
        if path.stem != "__main__":
            parts = path.relative_to(root.parent).with_suffix("").parts
            importlib.import_module(".".join(p for p in parts if p != "__init__"))
    found: list[type[SidecarError]] = []
    waiting: list[type[SidecarError]] = [SidecarError]
    while waiting:
        error = waiting.pop()
        found.append(error)
        waiting.extend(error.__subclasses__())
    return sorted(found, key=lambda error: f"{error.__module__}.{error.__qualname__}")


def _rows() -> dict[str, tuple[int, str, str]]:
    rows: dict[str, tuple[int, str, str]] = {}
    for line in CATALOGUE.read_text().splitlines():
        if match := ROW.match(line):
            status, openai_type, anthropic_type, code = match.groups()
            assert code not in rows, f"docs/errors.md lists {code!r} twice"
            rows[code] = (int(status), openai_type, anthropic_type)
    return rows


ERRORS = _every_error()


def test_the_walk_finds_errors_of_every_module() -> None:
    modules = {error.__module__ for error in ERRORS}
    assert {"sidecar.errors", "sidecar.pipeline.validate", "sidecar.pipeline.fallback",
            "sidecar.pipeline.attempt", "sidecar.pipeline.access",
            "sidecar.pipeline.adapter"} <= modules  # fmt: skip


@pytest.mark.parametrize("error", ERRORS, ids=lambda error: error.__qualname__)
def test_every_error_has_its_row(error: type[SidecarError]) -> None:
    rows = _rows()
    assert error.code in rows, f"{error.__qualname__}: no row for `{error.code}` in docs/errors.md"
    expected = (error.status, error.type, anthropic_error_type(error.status))
    assert rows[error.code] == expected, f"{error.__qualname__}: its row says otherwise"


def test_every_row_is_an_error_the_sidecar_has() -> None:
    assert set(_rows()) == {error.code for error in ERRORS}


def test_invalid_requests_are_400_as_the_providers_answer() -> None:
    invalid = [error for error in ERRORS if error.type == "invalid_request_error"]
    assert invalid
    assert all(error.status != 422 for error in invalid)
