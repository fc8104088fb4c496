"""Policy errors that name the file, line, column and the path inside the document."""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

Path = tuple[str | int, ...]
EXCERPT: Final = 80  # characters of a value an error quotes: a token, never a whole file
MAX_MESSAGE: Final = 400  # characters of one issue's message, whatever it quotes


def excerpt(value: object) -> str:
    """``repr(value)`` cut to EXCERPT characters, so an error never carries a whole file."""
    return cut(repr(value), EXCERPT)


def cut(text: str, limit: int) -> str:
    """*text* of at most *limit* characters, ``…`` marking a cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def did_you_mean(word: str, options: Sequence[str]) -> str:
    """`` (did you mean 'x'?)`` with the option closest to *word*, or nothing."""
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def format_path(path: Path) -> str:
    """``('routes', 0, 'retry')`` -> ``routes[0].retry``; a key cut to EXCERPT characters."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            key = cut(part, EXCERPT)
            out += f".{key}" if out else key
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
        message = cut(self.message, MAX_MESSAGE)
        if not self.path:
            return f"{where}: {message}"
        return f"{where}: {cut(format_path(self.path), MAX_MESSAGE)}: {message}"


class PolicyError(Exception):
    """A policy set that cannot be loaded; carries every issue found."""

    def __init__(self, issues: Sequence[Issue]) -> None:
        self.issues = tuple(issues)
        super().__init__("\n".join(str(issue) for issue in self.issues))
