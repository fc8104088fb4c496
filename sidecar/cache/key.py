"""Which requests a route caches, and the key of each: pure, no I/O.

The key is a SHA-256 of the canonical request: the route's name, the client's
wire format, method and path (with query), the headers that change an answer
(``anthropic-version``, ``anthropic-beta``) and the JSON body with the fields in
``IGNORED_FIELDS`` removed, serialised by orjson with sorted keys (at every
depth). So key order, ``stream``, ``stream_options`` or ``user`` never split an
entry, while a different model, message, temperature or route always does.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Final, Literal

import orjson

KEY_VERSION: Final = 1  # bump when the canonical form changes: old entries are never read

# Body fields that do not change the answer (top level only).
IGNORED_FIELDS: Final = frozenset(
    {
        "stream",  # a stream and a JSON answer are the same answer (replayed either way)
        "stream_options",  # only whether a stream ends with usage (checked per entry)
        "user",  # an end-user id for the provider's abuse monitoring
        "metadata",  # Anthropic metadata.user_id / OpenAI stored-completion tags
        "store",  # whether OpenAI keeps the completion for distillation
        "prompt_cache_key",  # a hint for the provider's own prompt cache
        "safety_identifier",  # an end-user id, like user
    }
)
KEY_HEADERS: Final = ("anthropic-version", "anthropic-beta")


def cacheable(when: Literal["deterministic", "always"], body: Mapping[str, object] | None) -> bool:
    """Whether the route's ``cache.when`` lets this request be cached.

    ``deterministic``: ``temperature`` present and 0, and ``n`` absent (or null) or 1.
    ``always``: any request with a JSON object body.
    """
    if body is None:
        return False
    if when == "always":
        return True
    temperature = body.get("temperature")
    if isinstance(temperature, bool) or not isinstance(temperature, int | float):
        return False
    n = body.get("n")
    return temperature == 0 and (n is None or (n == 1 and not isinstance(n, bool)))


def cache_key(
    route: str,
    client_format: str,
    method: str,
    path_qs: str,
    body: Mapping[str, object],
    headers: Mapping[str, str],
) -> str:
    """The hex SHA-256 of the canonical request."""
    kept = {name: value for name, value in body.items() if name not in IGNORED_FIELDS}
    varying = [headers.get(name, "") for name in KEY_HEADERS]
    canonical = orjson.dumps(
        [KEY_VERSION, route, client_format, method, path_qs, varying, kept],
        option=orjson.OPT_SORT_KEYS,
    )
    return hashlib.sha256(canonical).hexdigest()
