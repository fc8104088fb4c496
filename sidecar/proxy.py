"""The proxy handler: route the request, then forward it to the route's first target.

The resilience stages (deadline, retry, breaker, fallback, attempt timeouts,
stream commit point) wrap the forwarding step in the request-path issue; the
routing, body limits, header hygiene and unbuffered streaming live here.
"""

from __future__ import annotations

import uuid
from typing import Final

import orjson
from aiohttp import ClientError, ClientTimeout, web

from sidecar.errors import BodyTooLarge, InvalidRequest, NoRoute, NotReady, UpstreamUnavailable
from sidecar.headers import client_headers, upstream_headers
from sidecar.policy.model import PolicySet, Route, Target
from sidecar.policy.store import PolicyStore
from sidecar.upstream import SESSION

STORE: Final = web.AppKey("policy_store", PolicyStore)
REQUEST_ID: Final = web.RequestKey("request_id", str)
HARD_BODY_LIMIT: Final = 64 * 1024 * 1024
_MAX_ID_LENGTH: Final = 128


def request_id(request: web.Request) -> str:
    """The client's x-request-id when sane, else a new one; stored on the request."""
    if REQUEST_ID in request:
        return request[REQUEST_ID]
    given = request.headers.get("x-request-id", "")
    valid = 0 < len(given) <= _MAX_ID_LENGTH and given.isprintable() and given.isascii()
    chosen = given if valid else uuid.uuid4().hex
    request[REQUEST_ID] = chosen
    return chosen


async def handle(request: web.Request) -> web.StreamResponse:
    policy = request.app[STORE].active  # held for the whole request, whatever reloads do
    if policy is None:
        raise NotReady("no valid policy is loaded yet; see /admin/policy")
    body = await _read_body(request, policy)
    model = _model_of(body) if policy.needs_model else None
    route = policy.route_for(request.method, request.path, model, request.headers)
    if route is None:
        raise NoRoute(f"no route matches {request.method} {request.path}")
    if len(body) > route.validate.max_body:
        raise BodyTooLarge(
            f"request body is {len(body)} bytes; route {route.name!r} allows "
            f"{route.validate.max_body}"
        )
    return await _forward(request, policy, route, route.fallback[0], body)


async def _forward(
    request: web.Request, policy: PolicySet, route: Route, target: Target, body: bytes
) -> web.StreamResponse:
    upstream = target.upstream
    rid = request_id(request)
    payload = _rewrite_model(body, target)
    connect = route.timeouts.connect or upstream.connect_timeout
    timeout = ClientTimeout(sock_connect=connect, sock_read=route.timeouts.idle)
    session = request.app[SESSION]
    try:
        async with session.request(
            request.method,
            upstream.url + request.path_qs,
            data=payload if payload else None,
            headers=upstream_headers(request.headers, upstream, rid),
            timeout=timeout,
            allow_redirects=False,
        ) as answer:
            response = web.StreamResponse(status=answer.status, reason=answer.reason)
            response.headers.update(client_headers(answer.headers))
            response.headers["x-request-id"] = rid
            response.headers["x-sidecar-upstream"] = upstream.name
            response.headers["x-sidecar-attempts"] = "1"
            response.headers["x-sidecar-policy"] = policy.hash
            await response.prepare(request)
            async for chunk in answer.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response
    except (ClientError, TimeoutError) as exc:
        raise UpstreamUnavailable(
            f"upstream {upstream.name!r} failed: {type(exc).__name__}"
        ) from None


async def _read_body(request: web.Request, policy: PolicySet) -> bytes:
    limit = max((route.validate.max_body for route in policy.routes), default=HARD_BODY_LIMIT)
    declared = request.content_length
    if declared is not None and declared > limit:
        raise BodyTooLarge(f"request body is {declared} bytes; the limit is {limit}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_any():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"request body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _model_of(body: bytes) -> str | None:
    if not body:
        return None
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"request body is not valid JSON: {exc}") from None
    model = parsed.get("model") if isinstance(parsed, dict) else None
    return model if isinstance(model, str) else None


def _rewrite_model(body: bytes, target: Target) -> bytes:
    """The body with the target's model, re-encoded only when the model changes."""
    if not body or (target.model is None and not target.model_map):
        return body
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body
    if not isinstance(parsed, dict):
        return body
    requested = parsed.get("model")
    wanted = target.model_for(requested if isinstance(requested, str) else None)
    if wanted is None or wanted == requested:
        return body
    parsed["model"] = wanted
    return orjson.dumps(parsed)
