"""Policy errors that name the file, line, column and the path inside the document."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

Path = tuple[str | int, ...]


def format_path(path: Path) -> str:
    """``('routes', 0, 'retry')`` -> ``routes[0].retry``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out or "(document)"


@dataclass(frozen=True, slots=True)
class Issue:
    """One problem in one file."""

    file: str
    line: int  # 1-based; 0 when unknown
    column: int  # 1-based; 0 when unknown
    path: Path
    message: str

    def __str__(self) -> str:
        where = self.file if not self.line else f"{self.file}:{self.line}:{self.column}"
        if not self.path:
            return f"{where}: {self.message}"
        return f"{where}: {format_path(self.path)}: {self.message}"


class PolicyError(Exception):
    """A policy set that cannot be loaded; carries every issue found."""

    def __init__(self, issues: Sequence[Issue]) -> None:
        self.issues = tuple(issues)
        super().__init__("\n".join(str(issue) for issue in self.issues))
