"""The proxy handler: intake (path, body, route, the route's in-flight slot), then hand over.

The runtime (policy + compiled pipelines) is read once when the request
starts; a reload in the meantime does not touch this request. The route's
pipeline does the rest, down to writing the answer (its respond stage, the
commit point). The request's scope is closed here, in a ``finally`` that spans
the whole answer, so whatever a cancelled path still holds is released.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
import uuid
from typing import Final

from aiohttp import web

from sidecar.admin_guard import cross_site
from sidecar.body import read_body
from sidecar.errors import (
    BodyTimeout,
    BodyTooLarge,
    CrossSite,
    Draining,
    InvalidRequest,
    NoRoute,
    NotReady,
    RouteOverloaded,
    SidecarError,
    client_format,
    error_response,
)
from sidecar.jsonbody import parse_object
from sidecar.observability.logs import log_request
from sidecar.pipeline.build import Runtime
from sidecar.pipeline.call import Call
from sidecar.pipeline.validate import check_model
from sidecar.policy.model import PolicySet
from sidecar.state import HOLDER, LIFECYCLE, REFUSALS, REGISTRIES

log = logging.getLogger("sidecar")
REQUEST_ID: Final = web.RequestKey("request_id", str)
_MAX_ID_LENGTH: Final = 128


# New ids: a random per-process prefix plus a counter — unique across replicas, and
# without a urandom syscall per request.
_ID_PREFIX: Final = uuid.uuid4().hex[:16]
_ids = itertools.count(1)


def request_id(request: web.Request) -> str:
    """The client's x-request-id when sane, else a new one; stored on the request."""
    if REQUEST_ID in request:
        return request[REQUEST_ID]
    given = request.headers.get("x-request-id", "")
    valid = 0 < len(given) <= _MAX_ID_LENGTH and given.isprintable() and given.isascii()
    chosen = given if valid else f"{_ID_PREFIX}{next(_ids):016x}"
    request[REQUEST_ID] = chosen
    return chosen


async def serve(request: web.Request) -> web.StreamResponse:
    """The proxy route: the one place where exceptions become HTTP responses.

    (A handler-level try, not a middleware: aiohttp builds the middleware chain
    anew for every request, which the hot path does not need.)
    """
    try:
        return await handle(request)
    except SidecarError as error:
        response = error_response(error, client_format(request), request_id(request))
        if isinstance(error, BodyTimeout):
            response.force_close()  # the rest of the body may still be on its way
        return response
    except web.HTTPException:
        raise
    except Exception:
        rid = request_id(request)
        log.exception("unexpected error handling request %s", rid)
        internal = SidecarError(f"internal error in the sidecar (request id {rid})")
        return error_response(internal, client_format(request), rid)


async def handle(request: web.Request) -> web.StreamResponse:
    lifecycle = request.app[LIFECYCLE]
    metrics = request.app[REGISTRIES].metrics
    started = time.monotonic()
    rid = request_id(request)
    record = _Record()
    task = lifecycle.track()
    try:
        runtime = request.app[HOLDER].current  # held for the whole request, whatever reloads do
        if runtime is None:
            raise NotReady("no valid policy is loaded yet; see /admin/policy")
        if lifecycle.draining:
            raise Draining("the sidecar is shutting down; retry on another instance")
        return await _handle(request, runtime, rid, started, record)
    except SidecarError as error:
        record.outcome, record.status = error.code, error.status
        raise
    except asyncio.CancelledError:
        if not lifecycle.aborting:
            record.outcome = "client_cancelled"
            metrics.client_cancellations.labels(record.route).inc()
            raise
        record.outcome = "shutdown_aborted"
        metrics.shutdown_aborted.inc()
        if record.call is not None and record.call.committed:
            raise  # the stream already got its final error event
        record.status = Draining.status
        aborted = Draining("the sidecar shut down before the answer was ready")
        return error_response(aborted, client_format(request), rid)
    finally:
        lifecycle.untrack(task)
        elapsed = time.monotonic() - started
        call = record.call
        if call is not None and call.answer is not None:  # an answer was (being) written
            record.status = record.status or call.answer.status
            record.upstream = call.answer.upstream.name
        metrics.finished(record.route, record.outcome, record.status, elapsed)
        if call is not None:
            log_request(
                {
                    "request_id": rid,
                    "route": record.route,
                    "outcome": record.outcome,
                    "status": record.status,
                    "attempts": call.attempts,
                    "upstream": record.upstream,
                    "fallbacks": [f"{name}:{reason}" for name, reason in call.fallbacks],
                    "continued": call.continued,
                    "cache": call.cache,
                    "latency_ms": round(elapsed * 1000, 1),
                }
            )
        else:  # refused before its pipeline call: a refusal line, at a bounded rate
            request.app[REFUSALS].write(
                {
                    "request_id": rid,
                    "method": request.method,
                    "path": request.path,
                    "route": record.route,
                    "status": record.status,
                    "error": record.outcome,
                    "remote": request.remote,
                    "latency_ms": round(elapsed * 1000, 1),
                }
            )


class _Record:
    """What the request turned out to be, for its log line and metrics."""

    __slots__ = ("call", "outcome", "route", "status", "upstream")

    def __init__(self) -> None:
        self.route = "none"
        self.outcome = "error"
        self.status: int | None = None
        self.upstream: str | None = None
        self.call: Call | None = None


async def _handle(
    request: web.Request, runtime: Runtime, rid: str, started: float, record: _Record
) -> web.StreamResponse:
    """Intake: check the path, read and parse the body, pick the route, hand over."""
    policy = runtime.policy
    if cross_site(request.headers):
        raise CrossSite("requests from web pages on other sites are refused (Origin)")
    if runtime.gate is not None:  # no key: a 401 before anything tells about routes
        runtime.gate.check(request.method, request.path, request.headers, request.remote)
    check_path(request.path, request.raw_path)
    body = await read_body(request, policy)
    parsed = _parse(body, request)
    raw_model = parsed.get("model") if parsed is not None else None
    model = raw_model if isinstance(raw_model, str) else None
    if model is not None:
        check_model(model)  # bounded before it is a key, a label or a log field
    route = policy.route_for(request.method, request.path, model, request.headers)
    if route is None:
        raise NoRoute(_no_route(policy, request, model))
    record.route = route.name
    if len(body) > route.validate.max_body:
        raise BodyTooLarge(
            f"request body is {len(body)} bytes; route {route.name!r} allows "
            f"{route.validate.max_body}"
        )
    registries = request.app[REGISTRIES]
    in_flight = registries.in_flight
    busy = in_flight.get(route.name, 0)
    if busy >= route.limits.max_in_flight:
        registries.metrics.shed.labels(route.name, "max_in_flight").inc()
        raise RouteOverloaded(
            f"route {route.name!r} is serving its limit of {route.limits.max_in_flight} "
            "requests at once; retry shortly"
        )
    pipeline = runtime.pipelines[route.name]
    pipeline.budget.deposit()
    call = Call(
        request_id=rid,
        method=request.method,
        path_qs=request.path_qs,
        headers=request.headers,
        client_format=client_format(request),
        route=route,
        body=body,
        parsed=parsed,
        model=model,
        stream=parsed is not None and parsed.get("stream") is True,
        remote=request.remote,
        request=request,
        lifecycle=request.app[LIFECYCLE],
        started=started,
    )
    record.call = call
    in_flight[route.name] = busy + 1
    try:  # the slot and everything the pipeline takes are held until the answer is over
        await pipeline.handle(call)  # the respond stage has written the answer
        record.outcome = call.outcome
        assert call.response is not None
        return call.response
    finally:
        in_flight[route.name] -= 1
        call.scope.close("cancelled")  # whatever an abandoned path still holds


def _no_route(policy: PolicySet, request: web.Request, model: str | None) -> str:
    """The 404's message: for a path that has routes, the model asked for and the model
    patterns the path accepts (the client's path and model are bounded at intake)."""
    said = f"no route matches {request.method} {request.path}"
    patterns = [
        route.match.model
        for route in policy.routes
        if route.match.model is not None
        and route.match.matches(request.method, request.path, None, request.headers, any_model=True)
    ]
    if not patterns:
        return said
    asked = f"model {model!r}" if model is not None else "a request without a model"
    return f"{said} for {asked}; this path accepts models matching: {', '.join(patterns)}"


def check_path(path: str, raw_path: str) -> None:
    """Refuse a path that could leave its route's prefix upstream (a 400, before routing).

    ``.``/``..`` segments, plain or percent-encoded, are resolved by the HTTP client
    (or the upstream), so ``/v1/files/../../admin`` would reach ``/admin`` even though
    it matched the ``/v1/files/`` prefix; so are ``..;`` (path parameters stripped),
    a double-encoded ``%252e%252e`` (decoded again upstream) and overlong UTF-8 dots
    (``%c0%ae``, decoded leniently by some servers). Encoded slashes and backslashes are
    decoded into separators by some servers, and control characters have no business in
    a path.
    """
    if "." not in path and "%" not in raw_path and "\\" not in path:
        return  # the usual API path: nothing to look at
    # A ";" starts path parameters that some servers strip ("..;" is ".." to Tomcat).
    if any(segment.split(";", 1)[0] in (".", "..") for segment in path.split("/")):
        raise InvalidRequest("the request path must not contain '.' or '..' segments")
    if "%" in path:  # still encoded once decoded: "%252e" (double encoding), invalid UTF-8
        raise InvalidRequest(
            "the request path must not be encoded twice or hold invalid UTF-8 "
            "(such as overlong encodings)"
        )
    raw = raw_path.split("?", 1)[0].lower()
    if "%2f" in raw or "%5c" in raw or "\\" in path:
        raise InvalidRequest("the request path must not contain encoded slashes or backslashes")
    if not path.isprintable():
        raise InvalidRequest("the request path must not contain control characters")


# Content types a JSON body arrives with when the client did not say JSON: none at all,
# curl's -d default, a plain-text fetch, an HTTP library's default for raw bytes. Such a
# body is JSON when it looks and parses so.
_UNLABELLED: Final = (
    "",
    "application/x-www-form-urlencoded",
    "text/plain",
    "application/octet-stream",
)


def _parse(body: bytes, request: web.Request) -> dict[str, object] | None:
    """The JSON body as an object, None when there is no body or it is not JSON; a body
    that is JSON, or says or looks it, and does not parse is a 400 naming the fault."""
    if not body:
        return None
    content_type = request.headers.get("content-type", "")
    if "json" in content_type:
        return parse_object(body)
    if content_type.split(";", 1)[0].strip().lower() in _UNLABELLED and body.lstrip()[:1] == b"{":
        return parse_object(body)  # e.g. `curl -d '{...}'`: read as the JSON it is
    return None
