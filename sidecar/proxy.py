"""The proxy handler: route the request, run the route's pipeline, write the answer.

The runtime (policy + compiled pipelines) is read once when the request
starts; a reload in the meantime does not touch this request. Writing the
answer's headers is the commit point: before it, the pipeline may retry and
fail over; after it, a failure becomes one final error event in the stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
import uuid
from typing import Final

import orjson
from aiohttp import StreamReader, web

from sidecar.errors import (
    BodyTimeout,
    BodyTooLarge,
    Draining,
    InvalidRequest,
    NoRoute,
    NotReady,
    RouteOverloaded,
    SidecarError,
    client_format,
    error_response,
)
from sidecar.observability.logs import log_request
from sidecar.pipeline.attempt import include_usage
from sidecar.pipeline.build import Pipeline, Runtime
from sidecar.pipeline.call import Answer, Call
from sidecar.pipeline.continuation import continue_answer
from sidecar.pipeline.validate import check_model
from sidecar.policy.model import PolicySet
from sidecar.providers.formats import stream_error
from sidecar.state import BODY_TIMEOUT, HOLDER, LIFECYCLE, REGISTRIES
from sidecar.streaming.relay import relay

log = logging.getLogger("sidecar")
REQUEST_ID: Final = web.RequestKey("request_id", str)
HARD_BODY_LIMIT: Final = 64 * 1024 * 1024
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
    runtime = request.app[HOLDER].current  # held for the whole request, whatever reloads do
    if runtime is None:
        raise NotReady("no valid policy is loaded yet; see /admin/policy")
    lifecycle = request.app[LIFECYCLE]
    if lifecycle.draining:
        raise Draining("the sidecar is shutting down; retry on another instance")
    metrics = request.app[REGISTRIES].metrics
    started = time.monotonic()
    rid = request_id(request)
    record = _Record()
    task = lifecycle.track()
    try:
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
        if record.committed:
            raise  # the stream already got its final error event
        record.status = Draining.status
        aborted = Draining("the sidecar shut down before the answer was ready")
        return error_response(aborted, client_format(request), rid)
    finally:
        lifecycle.untrack(task)
        elapsed = time.monotonic() - started
        metrics.finished(record.route, record.outcome, record.status, elapsed)
        call = record.call
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


class _Record:
    """What the request turned out to be, for its log line and metrics."""

    __slots__ = ("call", "committed", "outcome", "route", "status", "upstream")

    def __init__(self) -> None:
        self.committed = False
        self.route = "none"
        self.outcome = "error"
        self.status: int | None = None
        self.upstream: str | None = None
        self.call: Call | None = None


async def _handle(
    request: web.Request, runtime: Runtime, rid: str, started: float, record: _Record
) -> web.StreamResponse:
    fmt = client_format(request)
    policy = runtime.policy
    check_path(request.path, request.raw_path)
    body = await _read_body(request, policy)
    parsed = _parse(body, request)
    raw_model = parsed.get("model") if parsed is not None else None
    model = raw_model if isinstance(raw_model, str) else None
    if model is not None:
        check_model(model)  # bounded before it is a key, a label or a log field
    route = policy.route_for(request.method, request.path, model, request.headers)
    if route is None:
        raise NoRoute(f"no route matches {request.method} {request.path}")
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
        client_format=fmt,
        route=route,
        body=body,
        parsed=parsed,
        model=model,
        stream=parsed is not None and parsed.get("stream") is True,
        remote=request.remote,
    )
    record.call = call
    metrics = registries.metrics
    answer: Answer | None = None
    in_flight[route.name] = busy + 1
    try:
        try:
            answer = await pipeline.handle(call)
        finally:
            overhead = time.monotonic() - started - call.upstream_seconds - call.backoff_seconds
            metrics.spent(route.name, max(0.0, overhead))
        record.status, record.upstream = answer.status, answer.upstream.name
        record.committed = answer.stream is not None
        response, record.outcome = await _write(request, call, answer, policy, pipeline)
        return response
    finally:
        in_flight[route.name] -= 1
        for cleanup in call.cleanups:  # closes a live upstream stream at once
            cleanup()
        if answer is not None:
            answer.done("cancelled")  # no-op when _write already reported the result


async def _write(
    request: web.Request, call: Call, answer: Answer, policy: PolicySet, pipeline: Pipeline
) -> tuple[web.StreamResponse, str]:
    """Send *answer* to the client; return the response and the request's outcome label."""
    headers = answer.headers
    headers["x-request-id"] = call.request_id
    headers["x-sidecar-upstream"] = answer.upstream.name
    headers["x-sidecar-attempts"] = str(call.attempts)
    headers["x-sidecar-policy"] = policy.hash
    stream = answer.stream
    if stream is None:
        response = web.Response(status=answer.status, body=answer.body)
        response.headers.extend(headers)  # one copy, not two
        answer.done("success")
        return response, "success" if answer.status < 400 else "upstream_error"
    streaming = web.StreamResponse(status=answer.status, headers=headers)
    await streaming.prepare(request)  # the commit point
    try:
        return await _stream(request, call, answer, streaming, pipeline)
    except asyncio.CancelledError:
        if not request.app[LIFECYCLE].aborting:
            raise  # the client went away
        # The shutdown grace ended: say so in the stream, end it cleanly, count it.
        request.app[REGISTRIES].metrics.shutdown_aborted.inc()
        message = "the sidecar shut down before the answer was complete"
        await _end_with_error(streaming, call, message, "shutdown")
        answer.done("cancelled")
        return streaming, "shutdown_aborted"
    except ConnectionError:  # the client went away mid-write (no cancellation came first)
        request.app[REGISTRIES].metrics.client_cancellations.labels(call.route.name).inc()
        answer.done("cancelled")
        return streaming, "client_cancelled"
    except Exception:
        # A bug after the commit point: the headers are out, so the one place that turns
        # errors into responses cannot answer. End the stream with an error event instead
        # of leaving a truncated stream the client could take for complete.
        log.exception("unexpected error relaying the stream of request %s", call.request_id)
        message = f"internal error in the sidecar (request id {call.request_id})"
        await _end_with_error(streaming, call, message, "internal_error")
        answer.done("failure")
        return streaming, "stream_internal_error"


async def _end_with_error(
    streaming: web.StreamResponse, call: Call, message: str, code: str
) -> None:
    """A committed stream's last words: one error event in the client's format, then EOF."""
    with contextlib.suppress(Exception):
        await streaming.write(stream_error(call.client_format, message, call.request_id, code))
        await streaming.write_eof()


async def _stream(
    request: web.Request,
    call: Call,
    answer: Answer,
    streaming: web.StreamResponse,
    pipeline: Pipeline,
) -> tuple[web.StreamResponse, str]:
    """Relay a committed stream (continuing it elsewhere if it breaks and the route says so)."""
    metrics = request.app[REGISTRIES].metrics
    stream = answer.stream
    assert stream is not None
    continuable = call.route.continuation.enabled and not stream.delivered.tool
    first = stream.first[:-1] if stream.errored and continuable else stream.first
    await streaming.write(b"".join(first))
    if stream.terminated:
        result, ok = "complete", True
    elif stream.errored and not continuable:
        result, ok = "upstream_error", False
    else:
        if stream.errored:
            result, ok = "upstream_error", False
        else:
            outcome = await relay(
                stream.content,  # type: ignore[arg-type]
                streaming,
                stream.parser,
                answer.upstream.format,
                call.route.timeouts.idle,
                call.request_id,
                finished=stream.finished,
                translator=stream.translator,
                client=call.client_format,
                delivered=stream.delivered,
                emit_errors=not continuable,
                malformed_breaks=continuable,
            )
            result, ok = outcome.result, outcome.ok
        if not ok and continuable:
            answer.done("failure")  # the broken target's breaker counts it
            if stream.delivered.tool:  # tool calls went out meanwhile: never spliced
                message = f"the answer was interrupted after it started: {result}"
                await streaming.write(
                    stream_error(call.client_format, message, call.request_id, "stream_cut")
                )
            else:
                continued = await continue_answer(
                    call,
                    pipeline.targets,
                    answer.target,
                    pipeline.budget,
                    stream.delivered,
                    streaming,
                    include_usage(call),
                )
                call.continued = f"{continued.target}/{continued.mode}/{result}"
                metrics.continuations.labels(
                    call.route.name,
                    continued.target or "none",
                    continued.mode or "none",
                    "ok" if continued.ok else "failed",
                ).inc()
                result, ok = ("continued", True) if continued.ok else ("incomplete", False)
    await streaming.write_eof()
    delivered = stream.delivered
    if delivered.prompt_tokens is not None or delivered.completion_tokens is not None:
        model = answer.target.model_for(call.model) if answer.target else call.model
        metrics.count_tokens(
            answer.upstream.name,
            model,
            delivered.prompt_tokens or 0,
            delivered.completion_tokens or 0,
        )
    answer.done("success" if ok else "failure")
    return streaming, "success" if ok and result != "continued" else f"stream_{result}"


async def _read_body(request: web.Request, policy: PolicySet) -> bytes:
    limit = max((route.validate.max_body for route in policy.routes), default=HARD_BODY_LIMIT)
    declared = request.content_length
    if declared is not None and declared > limit:
        raise BodyTooLarge(f"request body is {declared} bytes; the limit is {limit}")
    if declared == 0:
        return b""
    content = request.content
    if declared is not None and content.is_eof():  # arrived with the head: no timer needed
        body = content.read_nowait()
        if len(body) != declared:
            raise InvalidRequest("the request body is shorter than its Content-Length")
        return body
    timeout = request.app[BODY_TIMEOUT]
    try:
        async with asyncio.timeout(timeout):
            return await _read_rest(content, declared, limit)
    except TimeoutError:
        raise BodyTimeout(
            f"the request body did not arrive within {timeout:g}s of the request head"
        ) from None


async def _read_rest(content: StreamReader, declared: int | None, limit: int) -> bytes:
    if declared is not None:
        try:
            return await content.readexactly(declared)
        except asyncio.IncompleteReadError:
            raise InvalidRequest("the request body is shorter than its Content-Length") from None
    chunks: list[bytes] = []
    size = 0
    async for chunk in content.iter_any():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"request body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def check_path(path: str, raw_path: str) -> None:
    """Refuse a path that could leave its route's prefix upstream (a 400, before routing).

    ``.``/``..`` segments, plain or percent-encoded, are resolved by the HTTP client
    (or the upstream), so ``/v1/files/../../admin`` would reach ``/admin`` even though
    it matched the ``/v1/files/`` prefix. Encoded slashes and backslashes are decoded
    into separators by some servers, and control characters have no business in a path.
    """
    if "." not in path and "%" not in raw_path and "\\" not in path:
        return  # the usual API path: nothing to look at
    segments = path.split("/")
    if "." in segments or ".." in segments:
        raise InvalidRequest("the request path must not contain '.' or '..' segments")
    raw = raw_path.split("?", 1)[0].lower()
    if "%2f" in raw or "%5c" in raw or "\\" in path:
        raise InvalidRequest("the request path must not contain encoded slashes or backslashes")
    if not path.isprintable():
        raise InvalidRequest("the request path must not contain control characters")


def _parse(body: bytes, request: web.Request) -> dict[str, object] | None:
    """The JSON body as an object, None when there is no body; invalid JSON is a 400."""
    if not body:
        return None
    content_type = request.headers.get("content-type", "application/json")
    if "json" not in content_type:
        return None
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"request body is not valid JSON: {exc}") from None
    if not isinstance(parsed, dict):
        raise InvalidRequest("the request body must be a JSON object")
    return parsed
