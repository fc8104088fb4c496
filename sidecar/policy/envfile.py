"""``--env-file``: ``KEY=VALUE`` lines for interpolating a policy without its real environment.

Blank lines and lines starting with ``#`` are skipped; ``export KEY=VALUE`` is read
as ``KEY=VALUE``. A value is taken as written (surrounding spaces dropped); one
wrapped in matching ``'`` or ``"`` loses them, with no escapes and no expansion.
An error names the file and line, never the line's text (it may hold a secret).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Final

MAX_BYTES: Final = 1 << 20
_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def read_env_file(path: Path) -> dict[str, str]:
    """The variables of *path*; ValueError saying where and why when it cannot be read."""
    try:
        with path.open("rb") as stream:
            raw = stream.read(MAX_BYTES + 1)
    except OSError as exc:
        raise ValueError(f"{path}: cannot read: {exc.strerror}") from None
    if len(raw) > MAX_BYTES:
        raise ValueError(f"{path}: larger than {MAX_BYTES} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not UTF-8") from None
    found: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.startswith("export "):
            stripped = stripped[len("export ") :].lstrip()
        name, equals, value = stripped.partition("=")
        name = name.rstrip()
        if not equals or not _NAME.fullmatch(name):
            raise ValueError(f"{path}:{number}: expected KEY=VALUE (KEY a variable name)")
        found[name] = _unquoted(value.strip())
    return found


def _unquoted(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value
