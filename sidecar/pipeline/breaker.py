"""Breaker stage (per target, inside retry): ask for a permit, record every attempt.

Failures are connection errors, resets, timeouts and 5xx. Client cancellation
and 4xx (429 included: the rate limit is the fallback's business) are not.
A stream's result is recorded when the relay ends, not when it starts.

With a shared state backend the decisions are the shared breaker's
(``sidecar/shared/breakers.py``): the cached shared state is consulted first,
Redis is asked only for a probe slot, and results are written by scripts; the
local breaker follows, and decides alone whenever Redis does not answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

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
from sidecar.resilience.breaker import BreakerRegistry, CircuitBreaker, Permit, Result
from sidecar.resilience.clock import Clock
from sidecar.resilience.retry import Failure
from sidecar.shared.breakers import SharedBreakers, decide, follow
from sidecar.shared.redis import SharedStore


def counts_as_failure(failure: Failure) -> bool:
    if failure.kind == "status":
        return failure.status is not None and failure.status >= 500
    return True


def make_breaker(
    registry: BreakerRegistry,
    policy: BreakerPolicy,
    route: str,
    upstream: str,
    shared: tuple[SharedStore, SharedBreakers, Clock] | None = None,
) -> Stage:
    prefix = f"{route}:{upstream}"
    per_model = policy.key == "upstream_model"
    if shared is not None and policy.enabled:
        return _shared(registry, policy, prefix, per_model, *shared)

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


@dataclass(frozen=True, slots=True)
class _Grant:
    """What let an attempt through: a local permit, or a shared probe of a generation."""

    permit: Permit | None
    probe: int | None = None


def _shared(
    registry: BreakerRegistry,
    policy: BreakerPolicy,
    prefix: str,
    per_model: bool,
    store: SharedStore,
    views: SharedBreakers,
    clock: Clock,
) -> Stage:
    pending: set[asyncio.Task[None]] = set()  # results recorded after the answer

    async def admit(circuit: CircuitBreaker) -> _Grant:
        key = circuit.key
        view = await views.current(store, key)
        if view is not None:
            follow(circuit, view, clock.now())
        decision = decide(view, policy.half_open_probes, clock.now())
        if decision == "ask":
            view, extra = await views.acquire(store, key, policy)
            if view is not None:
                follow(circuit, view, clock.now())
                if extra == 2:
                    return _Grant(None, view.generation)
                decision = "local" if extra == 1 else "reject"
            else:
                decision = "local"  # Redis unavailable: the local breaker decides
        if decision == "reject":
            assert view is not None
            circuit.count("rejected")
            raise BreakerRejected(key, view.remaining(clock.now()))
        permit = circuit.acquire()
        if permit is None:
            raise BreakerRejected(key, circuit.retry_in())
        return _Grant(permit)

    async def settle(circuit: CircuitBreaker, grant: _Grant, result: Result) -> None:
        key = circuit.key
        if grant.probe is not None:
            view, extra = await views.probe_done(store, key, policy, grant.probe, result)
            circuit.count(result)
            if view is not None:
                follow(circuit, view, clock.now(), "a half-open probe failed" if extra else "")
            return
        assert grant.permit is not None
        if result == "ignored":
            circuit.record(grant.permit, result)
            return
        if policy.window is not None:  # the local window decides; the shared breaker follows
            before = circuit.state
            circuit.record(grant.permit, result)
            if before == "closed" and circuit.state == "open":
                await views.record(store, key, policy, "trip")
            return
        seen = views.view(store, key)
        if result == "success" and seen is not None and seen.failures == 0:
            circuit.count(result)  # nothing to reset: no write
            return
        view, extra = await views.record(store, key, policy, result)
        if view is None:
            circuit.record(grant.permit, result)  # Redis unavailable: local counting
            return
        circuit.count(result)
        reason = f"{view.failures} consecutive failures (all replicas)" if extra else ""
        follow(circuit, view, clock.now(), reason)

    def later(circuit: CircuitBreaker, grant: _Grant, result: Result) -> None:
        task = asyncio.get_running_loop().create_task(settle(circuit, grant, result))
        pending.add(task)
        task.add_done_callback(pending.discard)

    async def breaker(call: Call, following: Handler) -> Answer:
        key = f"{prefix}:{call.model}" if per_model else prefix
        circuit = registry.get(key, policy)
        grant = await admit(circuit)
        try:
            answer = await following(call)
        except AttemptFailed as failed:
            failure = counts_as_failure(failed.failure)
            await settle(circuit, grant, "failure" if failure else "ignored")
            raise
        except (asyncio.CancelledError, Exception):
            later(circuit, grant, "ignored")
            raise
        if answer.stream is None:
            await settle(circuit, grant, "failure" if answer.status >= 500 else "success")
        else:
            answer.on_done.append(
                lambda completion: later(
                    circuit, grant, "ignored" if completion == "cancelled" else completion
                )
            )
        return answer

    return breaker
