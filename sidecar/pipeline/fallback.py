"""Fallback stage: try the route's targets in order until one answers.

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
from sidecar.pipeline.retry import NotRetryable
from sidecar.policy.model import TargetWhen
from sidecar.providers.formats import is_context_length_error


class AllBreakersOpen(SidecarError):
    status, type, code = 503, "server_error", "all_targets_unavailable"

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after: int = max(1, math.ceil(retry_after))


def make_fallback(targets: list[tuple[str, Handler, TargetWhen]], metrics: Metrics) -> Stage:
    regular = [(name, chain) for name, chain, when in targets if when == "always"]
    larger = [(name, chain) for name, chain, when in targets if when != "always"]

    async def fallback(call: Call, following: Handler) -> Answer:
        assert call.deadline is not None
        failures: list[TargetFailed] = []
        for position, (name, chain) in enumerate(regular):
            if call.deadline.expired:
                break
            try:
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
            except TargetFailed as failed:
                failures.append(failed)
                call.fallbacks.append((name, failed.reason))
                following_name = regular[position + 1][0] if position + 1 < len(regular) else "none"
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
        return _give_up(call, failures)

    return fallback


def _too_long(answer: Answer) -> bool:
    return is_context_length_error(answer.status, answer.body)


async def _try_larger(
    call: Call, larger: list[tuple[str, Handler]], failures: list[TargetFailed]
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
