"""Prefer stage (after validation): a request may name the upstream it wants tried first.

The header ``x-sidecar-prefer: <upstream>``, or the body field ``preferred_provider``
(removed before the body goes upstream: no provider knows it). When the route allows
that upstream (``prefer:``; by default any upstream of its chain), the fallback stage
tries it first and the rest of the chain after it, in policy order; breakers, retries
and fallback behave as usual. A name the route does not allow is a 400 listing the
allowed ones; a route with ``prefer: false`` refuses any preference with a 400.
"""

from __future__ import annotations

from typing import Final

import orjson

from sidecar.errors import InvalidRequest
from sidecar.pipeline.call import Answer, Call, Handler, Stage
from sidecar.policy.model import Route

HEADER: Final = "x-sidecar-prefer"
FIELD: Final = "preferred_provider"


class UnknownPreference(InvalidRequest):
    code = "invalid_preferred_provider"


def make_prefer(route: Route) -> Stage:
    allowed = route.prefer
    shown = ", ".join(allowed) if allowed else ""

    async def prefer(call: Call, following: Handler) -> Answer:
        named = call.headers.get(HEADER)
        parsed = call.parsed
        if parsed is not None and FIELD in parsed:
            field = parsed[FIELD]
            parsed = {key: value for key, value in parsed.items() if key != FIELD}
            call.parsed = parsed
            call.body = orjson.dumps(parsed)  # no provider knows the field: it never goes up
            if named is None:
                if not isinstance(field, str):
                    raise UnknownPreference(f"{FIELD!r} must be a string", param=FIELD)
                named = field
        if named is None:
            return await following(call)
        if allowed is None:
            raise UnknownPreference(
                f"route {route.name!r} does not take a preferred provider", param=FIELD
            )
        if named not in allowed:
            raise UnknownPreference(
                f"{named[:64]!r} is not a provider this route can prefer; allowed: {shown}",
                param=FIELD,
            )
        call.prefer = named
        return await following(call)

    return prefer
