"""Rate-limit stages: the route's limit (before any upstream call) and each upstream's own.

Route limit (after validation): over it, 429 in the client's format with an
accurate Retry-After and no upstream call. Bucket per route, or per client key
(hashed: a key never reaches Redis or a metric label) or per header value.

Upstream limit (per target, inside retry, before the breaker): an upstream at
its limit is skipped to the next fallback target (``rate_limited``); when every
target is skipped so, the fallback stage answers 429 with the shortest wait.

Tokens/minute are charged the prompt estimate up front and corrected from the
answer's usage (at once for a JSON answer; for a stream, when it ends).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Coroutine
from typing import Any

from sidecar.errors import InvalidRequest, RateLimited
from sidecar.observability.metrics import Metrics
from sidecar.pipeline.call import Answer, Call, Completion, Handler, Stage, TargetFailed
from sidecar.policy.model import RateLimit, Upstream
from sidecar.shared.redis import SharedStore
from sidecar.traffic.limiter import Limiter

_pending: set[asyncio.Task[None]] = set()  # stream corrections in flight (kept referenced)


def client_key(call: Call) -> str:
    """A short hash of the client's key (Authorization or x-api-key), or "anonymous"."""
    value = call.headers.get("authorization") or call.headers.get("x-api-key")
    if not value:
        return "anonymous"
    return hashlib.sha256(value.encode()).hexdigest()[:16]


def _key_function(limit: RateLimit) -> Callable[[Call], str | None]:
    """The bucket a request counts against; None: not limited (``missing: unlimited``)."""
    if limit.key == "client_key":
        return client_key
    if limit.key.startswith("header:"):
        header = limit.key.removeprefix("header:")
        missing = limit.missing

        def by_header(call: Call) -> str | None:
            value = call.headers.get(header, "")
            if value:
                return hashlib.sha256(value.encode()).hexdigest()[:16]
            if missing == "reject":
                raise InvalidRequest(
                    f"this route's rate limit is kept per {header!r} header; send one",
                    param=header,
                )
            return None if missing == "unlimited" else "none"

        return by_header
    return lambda call: "all"


def make_route_limit(
    route: str,
    limit: RateLimit,
    limiter: Limiter,
    shared: SharedStore | None,
    metrics: Metrics,
) -> Stage:
    key_of = _key_function(limit)
    prefix = f"route:{route}:"
    whole_route = prefix + "all" if limit.key == "route" else None  # built once, not per call
    counted = metrics.rate_limited.labels(route, "route")

    async def route_limit(call: Call, following: Handler) -> Answer:
        if whole_route is not None:
            name = whole_route
        else:
            key = key_of(call)
            if key is None:  # missing: unlimited
                return await following(call)
            name = prefix + key
        wait = await limiter.take(name, limit, call.prompt_estimate, shared)
        if wait > 0:
            counted.inc()
            raise RateLimited(
                f"rate limit of route {route!r} reached ({limit.describe()}); retry in {wait:.1f}s",
                wait,
            )
        answer = await following(call)
        _correct(answer, call, name, limit, limiter, shared)
        return answer

    return route_limit


def make_upstream_limit(
    upstream: Upstream, limiter: Limiter, shared: SharedStore | None, metrics: Metrics
) -> Stage:
    limit = upstream.rate_limit
    assert limit is not None
    name = f"upstream:{upstream.name}"

    async def upstream_limit(call: Call, following: Handler) -> Answer:
        wait = await limiter.take(name, limit, call.prompt_estimate, shared)
        if wait > 0:
            metrics.rate_limited.labels(call.route.name, f"upstream:{upstream.name}").inc()
            raise TargetFailed("rate_limited", retry_in=wait)
        answer = await following(call)
        _correct(answer, call, name, limit, limiter, shared)
        return answer

    return upstream_limit


def _correct(
    answer: Answer,
    call: Call,
    name: str,
    limit: RateLimit,
    limiter: Limiter,
    shared: SharedStore | None,
) -> None:
    """Charge the difference between the answer's real tokens and the up-front estimate."""
    if limit.tokens_per_minute is None:
        return
    estimate = call.prompt_estimate
    if answer.usage is not None:
        delta = sum(answer.usage) - estimate
        if shared is None:
            limiter.adjust_local(name, limit, delta)
        else:
            _schedule(limiter.adjust(name, limit, delta, shared))
    elif answer.stream is not None:
        delivered = answer.stream.delivered

        def at_end(_: Completion) -> None:
            used = (delivered.prompt_tokens or 0) + (delivered.completion_tokens or 0)
            if not used:
                return
            if shared is None:
                limiter.adjust_local(name, limit, used - estimate)
            else:
                _schedule(limiter.adjust(name, limit, used - estimate, shared))

        answer.held.append(call.scope.hold(at_end))  # even when the client leaves mid-stream


def _schedule(correction: Coroutine[Any, Any, None]) -> None:
    task = asyncio.get_running_loop().create_task(correction)
    _pending.add(task)
    task.add_done_callback(_pending.discard)
