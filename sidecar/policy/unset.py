"""Checking a policy without its secrets (``sidecar check --allow-unset``).

An unset ``${VAR}`` without a default reads as the empty string, as ``${VAR:-}``
would. Each such reference is a warning, and so is any error about a value that
holds one: it is about the empty stand-in, not the value the sidecar will see.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace

from sidecar.policy.errors import Issue, Path
from sidecar.policy.source import Document

Tainted = dict[tuple[str, Path], tuple[str, ...]]  # (file, path) -> unset variables


class EmptyWhenUnset(Mapping[str, str]):
    """*environ*, with every name it lacks reading as the empty string."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ

    def __getitem__(self, name: str) -> str:
        return self._environ.get(name, "")

    def __iter__(self) -> Iterator[str]:
        return iter(self._environ)

    def __len__(self) -> int:
        return len(self._environ)


def unset_references(document: Document, environ: Mapping[str, str]) -> Tainted:
    """The values of *document* that took an unset variable (parsed with EmptyWhenUnset)."""
    found: Tainted = {}
    for path, interpolation in document.interpolated.items():
        names = tuple(name for name, _ in interpolation.values if name not in environ)
        if names:
            found[(document.file, path)] = names
    return found


def unset_warnings(document: Document, tainted: Tainted) -> list[Issue]:
    """One warning per unset reference of *document*."""
    return [
        document.issue(path, f"environment variable {name} is not set: checked as empty")
        for (file, path), names in tainted.items()
        if file == document.file
        for name in names
    ]


def split(issues: Sequence[Issue], tainted: Tainted) -> tuple[list[Issue], list[Issue]]:
    """(errors, warnings): an issue at or under a value that took an unset variable is a
    warning naming the variable."""
    errors, warnings = [], []
    for issue in issues:
        names = next(
            (
                names
                for (file, path), names in tainted.items()
                if file == issue.file and issue.path[: len(path)] == path
            ),
            None,
        )
        if names is None:
            errors.append(issue)
        else:
            unset = ", ".join(f"${{{name}}}" for name in names)
            warnings.append(replace(issue, message=f"{issue.message} (unset {unset})"))
    return errors, warnings
