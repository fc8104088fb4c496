"""Breaker stage (per target, inside retry): ask for a permit, record every attempt.

Failures are connection errors, resets, timeouts and 5xx. Client cancellation
and 4xx (429 included: the rate limit is the fallback's business) are not.
A stream's result is recorded when the relay ends, not when it starts.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from sidecar.pipeline.call import (
    Answer,
    AttemptFailed,
    BreakerRejected,
    Call,
    Completion,
    Handler,
    Stage,
)
from sidecar.policy.model import Breaker as BreakerPolicy
from sidecar.resilience.breaker import BreakerRegistry, Permit, Result
from sidecar.resilience.retry import Failure


def counts_as_failure(failure: Failure) -> bool:
    if failure.kind == "status":
        return failure.status is not None and failure.status >= 500
    return True


def make_breaker(
    registry: BreakerRegistry, policy: BreakerPolicy, route: str, upstream: str
) -> Stage:
    prefix = f"{route}:{upstream}"
    per_model = policy.key == "upstream_model"

    async def breaker(call: Call, following: Handler) -> Answer:
        key = f"{prefix}:{call.model}" if per_model else prefix
        circuit = registry.get(key, policy)
        permit = circuit.acquire()
        if permit is None:
            raise BreakerRejected(key, circuit.retry_in())
        try:
            answer = await following(call)
        except AttemptFailed as failed:
            circuit.record(permit, "failure" if counts_as_failure(failed.failure) else "ignored")
            raise
        except (asyncio.CancelledError, Exception):
            circuit.record(permit, "ignored")
            raise
        if answer.stream is None:
            circuit.record(permit, "failure" if answer.status >= 500 else "success")
        else:
            answer.on_done.append(_recorder(circuit.record, permit))
        return answer

    return breaker


def _recorder(
    record: Callable[[Permit, Result], None], permit: Permit
) -> Callable[[Completion], None]:
    def done(completion: Completion) -> None:
        record(permit, "ignored" if completion == "cancelled" else completion)

    return done
