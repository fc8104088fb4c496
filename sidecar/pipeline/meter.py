"""Meter stage (per target, innermost): counts and times every upstream attempt."""

from __future__ import annotations

import time

from sidecar.observability.metrics import Metrics
from sidecar.pipeline.call import Answer, AttemptFailed, Call, Handler, Stage
from sidecar.resilience.retry import Failure


def result_label(failure: Failure) -> str:
    """ok / 429 / 4xx / 5xx / connect_error / reset / timeout / first_byte_timeout."""
    if failure.kind != "status" or failure.status is None:
        return failure.kind
    return "429" if failure.status == 429 else f"{failure.status // 100}xx"


def make_meter(metrics: Metrics, route: str, upstream: str) -> Stage:
    ok = metrics.attempts.labels(route, upstream, "ok")
    duration = metrics.attempt_duration.labels(route, upstream)
    ttft = metrics.ttft.labels(route, upstream)

    async def meter(call: Call, following: Handler) -> Answer:
        started = time.monotonic()
        try:
            answer = await following(call)
        except AttemptFailed as failed:
            elapsed = time.monotonic() - started
            call.upstream_seconds += elapsed
            metrics.attempts.labels(route, upstream, result_label(failed.failure)).inc()
            duration.observe(elapsed)
            raise
        elapsed = time.monotonic() - started
        call.upstream_seconds += elapsed
        ok.inc()
        duration.observe(elapsed)
        if answer.stream is not None:
            ttft.observe(elapsed)
        elif answer.usage is not None:
            model = answer.target.model_for(call.model) if answer.target else call.model
            metrics.count_tokens(upstream, model, *answer.usage)
        return answer

    return meter
