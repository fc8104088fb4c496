"""What a log field may hold: bounded in size (both formats), escaped for text lines.

Field values may come from the client (a path, a method, a model name, a
breaker key holding one). ``clip`` bounds them before any line is rendered:
a string is cut at ``MAX_FIELD_LENGTH`` characters and marked ``…[+N chars]``,
a list or dict (nested ones included) shows at most ``MAX_ITEMS`` items in all
and says how many it left out, keys become bounded strings, an integer beyond
64 bits becomes its size and any other object its bounded text. So no line
grows with what a client sends, however the value is shaped.

JSON lines are one line by construction (orjson escapes every control
character). ``text_value`` does the same for ``key=value`` lines: a value that
is not plain printable text without spaces, quotes, backslashes or ``=`` is
written as a Python string literal, which escapes CR, LF, tab, ESC, NEL, the
Unicode line separators and every other non-printable character.
"""

from __future__ import annotations

import re
from typing import Final

MAX_FIELD_LENGTH: Final = 256  # characters of one string: a value, a key, a list item
MAX_ITEMS: Final = 64  # items of one field's lists and dicts, nested ones counted together

_INT_MIN: Final = -(2**63)
_INT_MAX: Final = 2**64 - 1  # orjson writes integers up to 64 bits
_NEEDS_QUOTES: Final = re.compile(r"[\s'\"\\=]")


def clip(fields: dict[str, object]) -> dict[str, object]:
    """*fields* with every value and key bounded; *fields* itself when all are plain and short."""
    for key, value in fields.items():  # the hot path: plain fields, checked inline
        if type(key) is not str or len(key) > MAX_FIELD_LENGTH:
            break
        if type(value) is str:
            if len(value) > MAX_FIELD_LENGTH:
                break
        elif value is None or type(value) is float or type(value) is bool:
            continue
        elif type(value) is int:
            if not _INT_MIN <= value <= _INT_MAX:
                break
        elif type(value) is not list or (value and not _short_strings(value)):
            break
    else:
        return fields
    return {_key(k): _bound(v, _Budget()) for k, v in fields.items()}


def _short_strings(items: list[object]) -> bool:
    if len(items) > MAX_ITEMS:
        return False
    return all(type(item) is str and len(item) <= MAX_FIELD_LENGTH for item in items)


class _Budget:
    """Items a field may still show, across all its nesting levels."""

    __slots__ = ("left",)

    def __init__(self) -> None:
        self.left = MAX_ITEMS


def _bound(value: object, budget: _Budget) -> object:
    if value is None or isinstance(value, bool | float):
        return value
    if isinstance(value, int):
        return value if _INT_MIN <= value <= _INT_MAX else f"<int of {value.bit_length()} bits>"
    if isinstance(value, str):
        return value if len(value) <= MAX_FIELD_LENGTH else _cut(value)
    if isinstance(value, dict):
        shown: dict[str, object] = {}
        for key, item in value.items():
            if budget.left <= 0:
                shown["…"] = f"+{len(value) - len(shown)} items"
                break
            budget.left -= 1
            shown[_key(key)] = _bound(item, budget)
        return shown
    if isinstance(value, list | tuple | set | frozenset):
        listed: list[object] = []
        for item in value:
            if budget.left <= 0:
                listed.append(f"…[+{len(value) - len(listed)} items]")
                break
            budget.left -= 1
            listed.append(_bound(item, budget))
        return listed
    return _bound(str(value), budget)


def _key(key: object) -> str:
    text = key if isinstance(key, str) else str(key)
    return text if len(text) <= MAX_FIELD_LENGTH else _cut(text)


def _cut(value: str) -> str:
    return f"{value[:MAX_FIELD_LENGTH]}…[+{len(value) - MAX_FIELD_LENGTH} chars]"


def text_value(value: object) -> str:
    """*value* (already clipped) for a ``key=value`` line: one line, unambiguous."""
    if isinstance(value, str):
        plain = value and value.isprintable() and _NEEDS_QUOTES.search(value) is None
        return value if plain else repr(value)
    if value is None:
        return "-"
    if isinstance(value, list | tuple):
        return ",".join(text_value(item) for item in value) or "-"
    if isinstance(value, dict):
        return "{" + ",".join(f"{text_value(k)}:{text_value(v)}" for k, v in value.items()) + "}"
    return text_value(str(value))


def text_lines(text: str) -> str:
    """Multi-line *text* (a traceback) as continuation lines: each indented, escaped."""
    return "".join(f"\n    {_escaped(line)}" for line in text.splitlines())


def _escaped(line: str) -> str:
    return line if line.isprintable() else repr(line)[1:-1]
