"""Header hygiene: hop-by-hop headers stripped both ways, upstream auth set from the policy,
the client's credentials forwarded only where the policy opts in, the policy's secrets
redacted from what an upstream sends back."""

from __future__ import annotations

import functools
from typing import Final

from multidict import CIMultiDict, CIMultiDictProxy

from sidecar.policy.model import Upstream
from sidecar.policy.redaction import Scrubber

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
# Not who the client is: an upstream or a gateway that trusts these for rate limits, logs
# or allow-lists would believe whatever the client wrote. Nor another method. Cookies are
# for browsers and their sites, not for an API key's upstream. Dropped unless an
# upstream's ``forward_headers`` names them: the only names it may (policy/checks.py).
CLIENT_CLAIMS: Final = frozenset(
    {
        "forwarded",
        "x-forwarded-for",
        "x-real-ip",
        "x-http-method-override",
        "x-method-override",
        "cookie",
    }
)
# Set by the sidecar or its HTTP client, never copied from the other side.
_NOT_FORWARDED: Final = CLIENT_CLAIMS | frozenset(
    {
        "host",
        "content-length",
        "accept-encoding",
        # The body goes upstream as identity: sidecar.body decodes every coding it
        # accepts and refuses the rest, so the client's coding no longer describes it.
        "content-encoding",
        # The client does not get to tell the upstream (or a gateway in front of it)
        # which host or path it asked for: some proxies route or authorise by these.
        "x-forwarded-host",
        "x-original-url",
        "x-rewrite-url",
        # The sidecar's own request header (the preferred provider), no upstream's business.
        "x-sidecar-prefer",
    }
)
# An upstream's cookies and auth challenges are about the sidecar's credential, not the
# client's: never handed to the app (a browser app would store them; an SDK retries auth).
_NOT_RETURNED: Final = frozenset(
    {"content-length", "content-encoding", "server", "date", "set-cookie", "www-authenticate"}
)
CREDENTIALS: Final = ("authorization", "x-api-key", "api-key", "x-goog-api-key")
_REQUEST_DROP: Final = HOP_BY_HOP | _NOT_FORWARDED
_REQUEST_DROP_WITH_CREDENTIALS: Final = _REQUEST_DROP | frozenset(CREDENTIALS)
# An upstream (or a debugging proxy in front of it) that echoes the request's credentials.
_RESPONSE_DROP: Final = HOP_BY_HOP | _NOT_RETURNED | frozenset(CREDENTIALS)


def _with_connection_listed(base: frozenset[str], headers: CIMultiDictProxy[str]) -> frozenset[str]:
    """*base* plus the headers a Connection field names (rare: checked only when present)."""
    if "connection" not in headers:
        return base
    value = ",".join(headers.getall("connection"))  # the field may be repeated
    return base | {token.strip().lower() for token in value.split(",") if token.strip()}


def passes_client_auth(
    upstream: Upstream, client_format: str | None = None, sidecar_keys: bool = False
) -> bool:
    """Whether *upstream* gets the client's own credentials (else only the policy's, if any)."""
    return (
        upstream.client_auth == "pass"
        and (client_format is None or client_format == upstream.format)
        and not sidecar_keys
    )


@functools.lru_cache(maxsize=64)
def _allowing(base: frozenset[str], allowed: frozenset[str]) -> frozenset[str]:
    """*base* minus an upstream's ``forward_headers`` (never more than CLIENT_CLAIMS, which
    the compiler checks too): computed once per upstream and cached, not per request."""
    return base - (allowed & CLIENT_CLAIMS)


def upstream_headers(
    incoming: CIMultiDictProxy[str],
    upstream: Upstream,
    request_id: str,
    client_format: str | None = None,
    sidecar_keys: bool = False,
) -> CIMultiDict[str]:
    """Headers for an upstream attempt: the client's, minus hop-by-hop and credentials.

    The client's credentials go out only to an upstream that opts in
    (``client_auth: pass``) and speaks the client's wire format, and never when
    the route checks keys of its own (*sidecar_keys*: the client's credential is
    the sidecar's key). Headers the sidecar drops by default go through when the
    upstream's ``forward_headers`` names them. The policy's ``auth`` header is set
    last, so it wins.
    """
    passes = passes_client_auth(upstream, client_format, sidecar_keys)
    base = _REQUEST_DROP if passes else _REQUEST_DROP_WITH_CREDENTIALS
    if upstream.forward_headers:  # the policy lets some of the dropped ones through
        base = _allowing(base, upstream.forward_headers)
    drop = _with_connection_listed(base, incoming)
    out: CIMultiDict[str] = CIMultiDict()
    for key, value in incoming.items():
        if key.lower() not in drop:
            out.add(key, value)
    if upstream.auth is not None:
        out[upstream.auth.header] = upstream.auth.value.reveal()
    out["x-request-id"] = request_id
    return out


def client_headers(
    upstream_response: CIMultiDictProxy[str],
    upstream: Upstream | None = None,
    scrubber: Scrubber | None = None,
) -> CIMultiDict[str]:
    """Headers for the client: the upstream's, minus hop-by-hop, framing and credential ones
    (the upstream's own auth header included, should it echo it), and CORS grants (an
    upstream's ``Access-Control-Allow-Origin: *`` must not let a web page read answers
    paid for with the sidecar's key); the policy's secrets redacted from every value kept
    (an ``x-debug-auth: Bearer sk-...`` echo)."""
    drop = _with_connection_listed(_RESPONSE_DROP, upstream_response)
    if upstream is not None and upstream.auth is not None:
        drop = drop | {upstream.auth.header.lower()}
    # One search over every value first: an echo is rare, a per-value substitution is not free.
    scrub = scrubber.text if scrubber and scrubber.in_any(upstream_response.values()) else None
    out: CIMultiDict[str] = CIMultiDict()
    for key, value in upstream_response.items():
        name = key.lower()
        if name not in drop and not name.startswith("access-control-"):
            out.add(key, scrub(value) if scrub is not None else value)
    return out
