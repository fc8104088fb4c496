"""Header hygiene: hop-by-hop headers stripped both ways, upstream auth set from the policy."""

from __future__ import annotations

from typing import Final

from multidict import CIMultiDict, CIMultiDictProxy

from sidecar.policy.model import Upstream

HOP_BY_HOP: Final = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
# Set by the sidecar or its HTTP client, never copied from the other side.
_NOT_FORWARDED: Final = frozenset({"host", "content-length", "accept-encoding"})
_NOT_RETURNED: Final = frozenset({"content-length", "content-encoding", "server", "date"})
CREDENTIALS: Final = ("authorization", "x-api-key", "api-key", "x-goog-api-key")
_REQUEST_DROP: Final = HOP_BY_HOP | _NOT_FORWARDED
_REQUEST_DROP_WITH_CREDENTIALS: Final = _REQUEST_DROP | frozenset(CREDENTIALS)
_RESPONSE_DROP: Final = HOP_BY_HOP | _NOT_RETURNED


def _with_connection_listed(base: frozenset[str], headers: CIMultiDictProxy[str]) -> frozenset[str]:
    """*base* plus the headers a Connection field names (rare: checked only when present)."""
    if "connection" not in headers:
        return base
    value = ",".join(headers.getall("connection"))  # the field may be repeated
    return base | {token.strip().lower() for token in value.split(",") if token.strip()}


def upstream_headers(
    incoming: CIMultiDictProxy[str],
    upstream: Upstream,
    request_id: str,
    client_format: str | None = None,
) -> CIMultiDict[str]:
    """Headers for an upstream attempt: the client's, minus hop-by-hop and foreign credentials.

    The client's own credentials reach an upstream only when the policy sets no
    auth for it and it speaks the client's wire format: one provider's key is
    never sent to another.
    """
    foreign = client_format is not None and client_format != upstream.format
    base = _REQUEST_DROP_WITH_CREDENTIALS if upstream.auth is not None or foreign else _REQUEST_DROP
    drop = _with_connection_listed(base, incoming)
    out: CIMultiDict[str] = CIMultiDict(
        (key, value) for key, value in incoming.items() if key.lower() not in drop
    )
    if upstream.auth is not None:
        out[upstream.auth.header] = upstream.auth.value.reveal()
    out["x-request-id"] = request_id
    return out


def client_headers(upstream_response: CIMultiDictProxy[str]) -> CIMultiDict[str]:
    """Headers for the client: the upstream's, minus hop-by-hop and framing ones."""
    drop = _with_connection_listed(_RESPONSE_DROP, upstream_response)
    return CIMultiDict(
        (key, value) for key, value in upstream_response.items() if key.lower() not in drop
    )
