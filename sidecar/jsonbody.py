"""The request body as JSON: parsed once, and refused when it could mean two things.

A JSON object with the same key twice is legal to most parsers, but they disagree on
which one counts (orjson and Python keep the last, some keep the first). The sidecar
validates the body it parsed and forwards the bytes it received, so a body such as
``{"model": "cheap", "model": "costly"}`` could be checked as one request and read
upstream as another: it is a 400.

Finding duplicates costs little: every key is a string followed by a colon, so the
bytes hold at least as many ``"<ws>:`` as the parsed objects hold keys — exactly as
many unless a string value holds an escaped quote followed by a colon. Equal counts
prove there is no duplicate; otherwise the stdlib parser, told to refuse duplicates,
decides.
"""

from __future__ import annotations

import json
import re
from typing import Final

import orjson

from sidecar.errors import InvalidRequest

_KEY_END: Final = re.compile(rb'"\s*:')


class DuplicateKey(ValueError):
    pass


def parse_object(body: bytes) -> dict[str, object]:
    """*body* as a JSON object; invalid JSON, another type, or a duplicate key is a 400."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"request body is not valid JSON: {exc}") from None
    if not isinstance(parsed, dict):
        raise InvalidRequest("the request body must be a JSON object")
    if len(_KEY_END.findall(body)) != _keys(parsed):
        _refuse_duplicates(body)
    return parsed


def _keys(value: object) -> int:
    """Keys in all the objects of *value* (iterative: bodies may nest deeper than recursion)."""
    count = 0
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, dict):
            count += len(item)
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return count


def _refuse_duplicates(body: bytes) -> None:
    try:
        json.loads(body, object_pairs_hook=_unique)
    except DuplicateKey as duplicate:
        raise InvalidRequest(
            f"the request body has the key {duplicate} more than once in one object",
            param=str(duplicate)[1:-1] or None,
        ) from None
    except ValueError:  # something orjson took and the stdlib does not: not a duplicate
        return


def _unique(pairs: list[tuple[str, object]]) -> dict[str, object]:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise DuplicateKey(json.dumps(key[:64]))
            seen.add(key)
    return result
