"""Fallback stage: try the route's targets in order until one answers.

A tier is one step whose deployments are tried in the order its balancer picks
for the request, all before the next step. With ``hedge`` set, a target that is
slow to its first byte races the next one (``pipeline/hedge.py``), once per request.

Moves on when a target's retries are exhausted, its breaker is open, the retry
budget refuses, the first byte is late, or Retry-After is longer than
``max_wait``. A failure the policy does not list (400, 401, 403, 404, 413, 422,
...) is returned at once, never failed over — except a "context length
exceeded" 400, which goes to the targets marked ``when: context_length_exceeded``
(larger-context models) when the route has any. When every target fails: 503 with
Retry-After if all breakers were open, 504 if the deadline ran out, otherwise
the last upstream error reply (or 502 when there was none).
"""

from __future__ import annotations

import math

from sidecar.errors import RateLimited, SidecarError, UpstreamUnavailable
from sidecar.observability.logs import log_attempt
from sidecar.observability.metrics import Metrics
from sidecar.pipeline.attempt import DeadlineExceeded
from sidecar.pipeline.call import Answer, Call, Handler, Stage, TargetFailed
from sidecar.pipeline.hedge import HedgeFailed, Hedging
from sidecar.pipeline.retry import NotRetryable
from sidecar.pipeline.tier import Candidate, TierStep
from sidecar.providers.formats import is_context_length_error


class AllBreakersOpen(SidecarError):
    status, type, code = 503, "server_error", "all_targets_unavailable"

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after: int = max(1, math.ceil(retry_after))


def make_fallback(
    steps: list[Candidate | TierStep],
    larger: list[Candidate],
    metrics: Metrics,
    hedging: Hedging | None = None,
) -> Stage:
    """*steps*: the regular chain (a tier expands to its deployments, in the balancer's order
    for each request); *larger*: the ``when: context_length_exceeded`` targets."""
    static: list[Candidate] | None = None
    if not any(isinstance(step, TierStep) for step in steps):
        static = [step for step in steps if not isinstance(step, TierStep)]

    async def fallback(call: Call, following: Handler) -> Answer:
        assert call.deadline is not None
        regular = static if static is not None else _expand(steps, call)
        if call.prefer is not None:  # the request's preferred upstream first, the rest after
            regular = [c for c in regular if c[0] == call.prefer] + [
                c for c in regular if c[0] != call.prefer
            ]
        failures: list[TargetFailed] = []
        may_hedge = hedging is not None
        position = 0
        while position < len(regular):
            if call.deadline.expired:
                break
            name, chain = regular[position]
            try:
                if may_hedge and hedging is not None and position + 1 < len(regular):
                    return await hedging.race(call, regular[position], regular[position + 1])
                return await chain(call)
            except NotRetryable as final:
                answer = final.failed.answer
                if answer is not None and larger and _too_long(answer):
                    # The prompt does not fit: only the larger-context targets can help now.
                    call.fallbacks.append((name, "context_length"))
                    larger_answer = await _try_larger(call, larger, failures)
                    return larger_answer if larger_answer is not None else answer
                if answer is not None:
                    return answer
                raise UpstreamUnavailable(
                    f"upstream {name!r} failed ({final.failed.failure.label}); "
                    "the policy does not retry or fail over on that"
                ) from None
            except HedgeFailed as both:
                may_hedge = False  # one hedge per request: it is a bet on latency, not a retry
                for failed_name, failed in both.failures:
                    position += 1
                    _moved_on(call, failed_name, failed, regular, position, failures, metrics)
            except TargetFailed as failed:
                position += 1
                _moved_on(call, name, failed, regular, position, failures, metrics)
        return _give_up(call, failures)

    return fallback


def _expand(steps: list[Candidate | TierStep], call: Call) -> list[Candidate]:
    regular: list[Candidate] = []
    for step in steps:
        if isinstance(step, TierStep):
            regular.extend(step.order(call))
        else:
            regular.append(step)
    return regular


def _moved_on(
    call: Call,
    name: str,
    failed: TargetFailed,
    regular: list[Candidate],
    following: int,
    failures: list[TargetFailed],
    metrics: Metrics,
) -> None:
    """Record that *name* gave up and the chain moves on to ``regular[following]``."""
    failures.append(failed)
    call.fallbacks.append((name, failed.reason))
    following_name = regular[following][0] if following < len(regular) else "none"
    metrics.fallbacks.labels(call.route.name, name, following_name, failed.reason).inc()
    log_attempt(
        {
            "request_id": call.request_id,
            "route": call.route.name,
            "upstream": name,
            "event": "fallback",
            "reason": failed.reason,
        }
    )


def _too_long(answer: Answer) -> bool:
    return is_context_length_error(answer.status, answer.body)


async def _try_larger(
    call: Call, larger: list[Candidate], failures: list[TargetFailed]
) -> Answer | None:
    """Try the context-length targets in order; None when none of them answered."""
    assert call.deadline is not None
    for name, chain in larger:
        if call.deadline.expired:
            return None
        try:
            return await chain(call)
        except NotRetryable as final:
            if final.failed.answer is not None and not _too_long(final.failed.answer):
                return final.failed.answer
        except TargetFailed as failed:
            failures.append(failed)
            call.fallbacks.append((name, failed.reason))
    return None


def _give_up(call: Call, failures: list[TargetFailed]) -> Answer:
    assert call.deadline is not None
    if call.deadline.expired or not failures:
        raise DeadlineExceeded(
            f"the route's deadline ({call.route.deadline:g}s) ran out after "
            f"{call.attempts} attempt(s)"
        )
    if all(failure.reason in ("breaker_open", "rate_limited") for failure in failures) and any(
        failure.reason == "rate_limited" for failure in failures
    ):
        wait = min(failure.retry_in or 0.0 for failure in failures)
        raise RateLimited(
            f"every upstream for route {call.route.name!r} is at its rate limit; "
            f"retry in {max(1, math.ceil(wait))}s",
            wait,
        )
    if all(failure.reason == "breaker_open" for failure in failures):
        wait = min(failure.retry_in or 0.0 for failure in failures)
        raise AllBreakersOpen(
            "every upstream for this route is unavailable (circuit breakers open); "
            f"retry in {math.ceil(wait)}s",
            wait,
        )
    for failure in reversed(failures):
        if failure.answer is not None:
            return failure.answer
    last = failures[-1]
    detail = last.failure.label if last.failure else last.reason
    raise UpstreamUnavailable(
        f"every upstream for route {call.route.name!r} failed; last: {detail}"
    )
