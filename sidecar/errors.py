"""Errors the client sees, and the one place that turns them into responses.

Every body is in the client's wire format (OpenAI or Anthropic) and carries the
request id; the status says what happened (the catalogue: docs/errors.md). Every
answer says whether a retry can help (``x-should-retry``, which both official SDKs
honour): no by default, since the sidecar has spent its own retries and fallbacks;
yes, with ``Retry-After``, where the client should come back later.
"""

from __future__ import annotations

import math

import orjson
from aiohttp import web

from sidecar.providers.formats import anthropic_error_type
from sidecar.typedefs import WireFormat


class SidecarError(Exception):
    """An error answered by the sidecar itself, with a stable code."""

    status = 500
    type = "server_error"
    code = "internal_error"
    retry_after: int | None = None  # seconds, sent as Retry-After when set
    should_retry: bool | None = False  # sent as x-should-retry; None leaves it to the SDK
    headers: tuple[tuple[str, str], ...] = ()  # further response headers

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class CrossSite(SidecarError):
    status, type, code = 403, "permission_error", "cross_site_refused"


class InvalidRequest(SidecarError):
    status, type, code = 400, "invalid_request_error", "invalid_request"


class NoRoute(SidecarError):
    status, type, code = 404, "invalid_request_error", "no_route"


class BodyTooLarge(SidecarError):
    status, type, code = 413, "invalid_request_error", "request_too_large"


class UnsupportedEncoding(SidecarError):
    """A request Content-Encoding the sidecar cannot decode: 415 naming the ones it can."""

    status, type, code = 415, "invalid_request_error", "unsupported_content_encoding"

    def __init__(self, message: str, accepted: str) -> None:
        super().__init__(message)
        self.headers = (("Accept-Encoding", accepted),)  # RFC 9110, section 15.5.16


class BodyTimeout(SidecarError):
    status, type, code = 408, "invalid_request_error", "request_timeout"
    should_retry = None  # the body came too slowly; the SDKs' own rule (retry a 408) applies


class NotReady(SidecarError):
    status, type, code = 503, "server_error", "no_policy_loaded"
    should_retry, retry_after = True, 1


class Draining(SidecarError):
    status, type, code = 503, "server_error", "shutting_down"
    should_retry, retry_after = True, 1


class RouteOverloaded(SidecarError):
    status, type, code = 503, "server_error", "route_overloaded"
    should_retry, retry_after = True, 1


class UpstreamUnavailable(SidecarError):
    status, type, code = 502, "server_error", "upstream_error"


class UpstreamAuthFailed(SidecarError):
    """An upstream refused the sidecar's credentials (401/403): the policy's fault, not the app's.

    Retrying cannot help, so SDKs are told not to (``x-should-retry: false``, the default)."""

    status, type, code = 502, "server_error", "upstream_auth_failed"


class RateLimited(SidecarError):
    """A rate limit of the policy (the route's, or every target's upstream limit)."""

    status, type, code = 429, "rate_limit_error", "rate_limit_exceeded"
    should_retry = True

    def __init__(self, message: str, wait: float) -> None:
        super().__init__(message)
        self.retry_after = max(1, math.ceil(wait))


def client_format(request: web.BaseRequest) -> WireFormat:
    """The wire format the client speaks: Anthropic on /v1/messages or with anthropic-version."""
    if request.path.startswith("/v1/messages") or "anthropic-version" in request.headers:
        return "anthropic"
    return "openai"


def error_body(error: SidecarError, fmt: WireFormat, request_id: str) -> bytes:
    if fmt == "anthropic":
        kind = anthropic_error_type(error.status)
        return orjson.dumps(
            {
                "type": "error",
                "error": {"type": kind, "message": error.message},
                "request_id": request_id,
            }
        )
    return orjson.dumps(
        {
            "error": {
                "message": error.message,
                "type": error.type,
                "code": error.code,
                "param": error.param,
            },
            "request_id": request_id,
        }
    )


def relayed_error_body(body: bytes, request_id: str) -> bytes:
    """An upstream's final error body with the sidecar's request id, like the sidecar's own.

    Only a JSON object gains it (``request_id``; an upstream's own differing id is kept
    as ``upstream_request_id``); any other body goes back as it came.
    """
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body
    if not isinstance(parsed, dict):
        return body
    upstream_id = parsed.get("request_id")
    if upstream_id is not None and upstream_id != request_id:
        parsed.setdefault("upstream_request_id", upstream_id)
    parsed["request_id"] = request_id
    return orjson.dumps(parsed)


def error_response(error: SidecarError, fmt: WireFormat, request_id: str) -> web.Response:
    response = web.Response(
        body=error_body(error, fmt, request_id),
        status=error.status,
        content_type="application/json",
    )
    response.headers["x-request-id"] = request_id
    response.headers.extend(error_headers(error))
    return response


def error_headers(error: SidecarError) -> list[tuple[str, str]]:
    """The headers that go with *error*: Retry-After, x-should-retry and its own."""
    headers = list(error.headers)
    if error.retry_after is not None:
        headers.append(("Retry-After", str(error.retry_after)))
    if error.should_retry is not None:
        headers.append(("x-should-retry", "true" if error.should_retry else "false"))
    return headers
