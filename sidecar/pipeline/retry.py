"""Retry stage (per target): attempts, listed failures only, backoff or Retry-After, budget.

Sits outside the breaker, so every attempt is recorded there and an open
breaker stops the retries. The decisions are ``RetryPolicy``'s; this stage
only sleeps (on the injected clock) and loops.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import Counter, Histogram

from sidecar.observability.logs import log_attempt
from sidecar.observability.metrics import Metrics
from sidecar.pipeline.call import (
    Answer,
    AttemptFailed,
    BreakerRejected,
    Call,
    Handler,
    Stage,
    TargetFailed,
)
from sidecar.resilience.clock import Clock
from sidecar.resilience.retry import MoveOn, RetryPolicy


class NotRetryable(Exception):
    """A failure the policy does not list: it goes to the client, never to another target."""

    def __init__(self, failed: AttemptFailed) -> None:
        super().__init__(failed.failure.label)
        self.failed = failed


def make_retry(
    policy: RetryPolicy,
    clock: Clock,
    upstream: str,
    metrics: Metrics,
    sent: Callable[[str | None], str | None] = lambda model: model,
) -> Stage:
    """*sent*: the model the target sends for a requested one (its ``model`` / ``model_map``),
    for the attempt log line."""
    retries: Counter | None = None
    backoff: Histogram | None = None

    async def retry(call: Call, following: Handler) -> Answer:
        nonlocal retries, backoff
        assert call.deadline is not None
        attempt = 0
        while True:
            attempt += 1
            started = clock.now()
            try:
                return await following(call)
            except BreakerRejected as rejected:
                raise TargetFailed("breaker_open", retry_in=rejected.retry_in) from None
            except AttemptFailed as failed:
                failure = failed.failure
                fields = {
                    "request_id": call.request_id,
                    "route": call.route.name,
                    "upstream": upstream,
                    "model": call.model,
                    "model_sent": sent(call.model),
                    "attempt": call.attempts,
                    "status": failure.status,
                    "error": failure.label,
                    "latency_ms": round((clock.now() - started) * 1000, 1),
                }
                if not policy.retryable(failure):
                    log_attempt({**fields, "backoff_ms": None, "decision": "return"})
                    raise NotRetryable(failed) from None
                decision = policy.decide(attempt, failure, call.deadline)
                if isinstance(decision, MoveOn):
                    log_attempt({**fields, "backoff_ms": None, "decision": decision.reason})
                    raise TargetFailed(decision.reason, failure, failed.answer) from None
                log_attempt(
                    {**fields, "backoff_ms": round(decision.delay * 1000, 1), "decision": "retry"}
                )
                if retries is None or backoff is None:
                    retries = metrics.retries.labels(call.route.name, upstream)
                    backoff = metrics.backoff.labels(call.route.name)
                retries.inc()
                backoff.observe(decision.delay)
                call.backoff_seconds += decision.delay
                await clock.sleep(decision.delay)

    return retry
