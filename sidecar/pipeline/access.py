"""Access: optional client keys and a loopback-only switch, per route.

A missing or wrong key is a 401 in the client's wire format and no upstream
call. Keys are compared in constant time, against every configured key.

Two checks. The ``KeyGate`` runs at intake, before the body is read: a client
that no route it could reach would accept gets its 401 (or 403) before any 400,
413 or 404 that would tell it about routes and validation rules. The routes
are matched without the body's model then; when an open route might still take
the request, the gate lets it through. The access stage then checks the route
the request was routed to.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Mapping

from sidecar.errors import SidecarError
from sidecar.pipeline.call import Answer, Call, Handler, Stage
from sidecar.policy.model import Access, Match, PolicySet


class Unauthorized(SidecarError):
    status, type, code = 401, "authentication_error", "invalid_api_key"


class Forbidden(SidecarError):
    status, type, code = 403, "permission_error", "not_local"


def presented_key(headers: Mapping[str, str]) -> bytes:
    given = headers.get("authorization", "")
    if given.startswith("Bearer "):
        return given[7:].strip().encode()
    return headers.get("x-api-key", "").strip().encode()


def _matches_any(given: bytes, keys: list[bytes]) -> bool:
    matched = False
    for key in keys:  # no early exit: the time does not tell which key matched
        matched |= hmac.compare_digest(given, key)
    return matched


def _unauthorized() -> Unauthorized:
    return Unauthorized(
        "a valid client key is required ('Authorization: Bearer <key>' or 'x-api-key: <key>')"
    )


class KeyGate:
    """Intake's check, before the body is read (see the module docstring)."""

    __slots__ = ("_all", "_routes")

    def __init__(self, routes: list[tuple[Match, Access, list[bytes]]]) -> None:
        self._routes = routes
        self._all = [key for _, _, keys in routes for key in keys]

    def check(self, method: str, path: str, headers: Mapping[str, str], remote: str | None) -> None:
        candidates = [
            (access, keys)
            for match, access, keys in self._routes
            if match.matches(method, path, None, headers, any_model=True)
        ]
        if not candidates:  # a 404 to come: only a client with some key may learn that
            if not _matches_any(presented_key(headers), self._all):
                raise _unauthorized()
            return
        if all(access.localhost_only for access, _ in candidates) and not _loopback(remote):
            raise Forbidden("this route accepts clients on this host only")
        if any(not keys for _, keys in candidates):
            return  # a route without keys may take it: the access stage decides
        wanted = [key for _, keys in candidates for key in keys]
        if not _matches_any(presented_key(headers), wanted):
            raise _unauthorized()


def make_gate(policy: PolicySet) -> KeyGate | None:
    """The gate, or None when no route restricts anything (no cost on the hot path)."""
    routes = [
        (route.match, route.access, [key.reveal().encode() for key in route.access.keys])
        for route in policy.routes
    ]
    if not any(access.keys or access.localhost_only for _, access, _ in routes):
        return None
    return KeyGate(routes)


def make_access(access: Access) -> Stage | None:
    """The stage, or None when the route restricts nothing (no cost on the hot path)."""
    if not access.keys and not access.localhost_only:
        return None
    keys = [key.reveal().encode() for key in access.keys]

    async def check(call: Call, following: Handler) -> Answer:
        if access.localhost_only and not _loopback(call.remote):
            raise Forbidden("this route accepts clients on this host only")
        if keys and not _matches_any(presented_key(call.headers), keys):
            raise _unauthorized()
        return await following(call)

    return check


def _loopback(remote: str | None) -> bool:
    if remote is None:
        return False
    try:
        return ipaddress.ip_address(remote).is_loopback
    except ValueError:
        return False
