"""Access stage (outermost): optional client keys and a loopback-only switch, per route.

A missing or wrong key is a 401 in the client's wire format and no upstream
call. Keys are compared in constant time, against every configured key.
"""

from __future__ import annotations

import hmac
import ipaddress

from sidecar.errors import SidecarError
from sidecar.pipeline.call import Answer, Call, Handler, Stage
from sidecar.policy.model import Access


class Unauthorized(SidecarError):
    status, type, code = 401, "authentication_error", "invalid_api_key"


class Forbidden(SidecarError):
    status, type, code = 403, "permission_error", "not_local"


def presented_key(call: Call) -> bytes:
    given = call.headers.get("authorization", "")
    if given.startswith("Bearer "):
        return given[7:].strip().encode()
    return call.headers.get("x-api-key", "").strip().encode()


def make_access(access: Access) -> Stage | None:
    """The stage, or None when the route restricts nothing (no cost on the hot path)."""
    if not access.keys and not access.localhost_only:
        return None
    keys = [key.reveal().encode() for key in access.keys]

    async def check(call: Call, following: Handler) -> Answer:
        if access.localhost_only and not _loopback(call.remote):
            raise Forbidden("this route accepts clients on this host only")
        if keys:
            given = presented_key(call)
            matched = False
            for key in keys:  # no early exit: the time does not tell which key matched
                matched |= hmac.compare_digest(given, key)
            if not matched:
                raise Unauthorized(
                    "a valid client key is required ('Authorization: Bearer <key>' or "
                    "'x-api-key: <key>')"
                )
        return await following(call)

    return check


def _loopback(remote: str | None) -> bool:
    if remote is None:
        return False
    try:
        return ipaddress.ip_address(remote).is_loopback
    except ValueError:
        return False
