"""Breaker stage (per target, inside retry): ask for a permit, record every attempt.

Failures are connection errors, resets, timeouts and 5xx. Client cancellation
and 4xx (429 included: the rate limit is the fallback's business) are not.
A stream's result is recorded when the relay ends, not when it starts.

A breaker belongs to an upstream — and to the model actually sent to it, with
``breaker.key: upstream_model`` — whatever route the attempt came from, so every
route learns at once that an upstream is down. ``breaker_key`` is the one
function that names it. The permit is held in the request's scope from the
moment it is granted, so a cancellation at any await releases it.

With a shared state backend the decisions are the shared breaker's
(``sidecar/shared/breakers.py``): the cached shared state is consulted first,
Redis is asked only for a probe slot, and results are written by scripts; the
local breaker follows, and decides alone whenever Redis does not answer.
"""

from __future__ import annotations

import asyncio
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
from sidecar.policy.model import Target
from sidecar.resilience.breaker import BreakerRegistry, CircuitBreaker, Permit, Result
from sidecar.resilience.clock import Clock
from sidecar.resilience.retry import Failure
from sidecar.shared.breakers import SharedBreakers, decide, follow
from sidecar.shared.redis import SharedStore


def breaker_key(target: Target, policy: BreakerPolicy, model: str | None) -> str:
    """The breaker of *target*'s upstream (and of the model sent to it, when per model).

    *model* is the client's model; the key uses what the target actually sends
    (after its ``model`` / ``model_map``).
    """
    name = target.upstream.name
    if policy.key != "upstream_model":
        return name
    return f"{name}:{target.model_for(model) or model}"


def counts_as_failure(failure: Failure) -> bool:
    if failure.kind == "status":
        return failure.status is not None and failure.status >= 500
    return True


def _result(answer: Answer) -> Result:
    return "failure" if answer.status >= 500 else "success"


def _settled(completion: Completion) -> Result:
    return "ignored" if completion == "cancelled" else completion


def make_breaker(
    registry: BreakerRegistry,
    policy: BreakerPolicy,
    target: Target,
    shared: tuple[SharedStore, SharedBreakers, Clock] | None = None,
) -> Stage:
    if shared is not None and policy.enabled:
        return _shared(registry, policy, target, *shared)
    fixed = breaker_key(target, policy, None) if policy.key != "upstream_model" else None

    async def breaker(call: Call, following: Handler) -> Answer:
        key = fixed or breaker_key(target, policy, call.model)
        circuit = registry.get(key, policy)
        permit = circuit.acquire()
        if permit is None:
            raise BreakerRejected(key, circuit.retry_in())
        held = call.scope.hold(lambda completion: circuit.record(permit, _settled(completion)))
        try:
            answer = await following(call)
        except AttemptFailed as failed:
            if held.take():
                failure = counts_as_failure(failed.failure)
                circuit.record(permit, "failure" if failure else "ignored")
            raise
        except BaseException:
            held.release("cancelled")
            raise
        if answer.stream is None:
            if held.take():
                circuit.record(permit, _result(answer))
        else:
            answer.held.append(held)
        return answer

    return breaker


@dataclass(frozen=True, slots=True)
class _Grant:
    """What let an attempt through: a local permit, or a shared probe of a generation."""

    permit: Permit | None
    probe: int | None = None


def _shared(
    registry: BreakerRegistry,
    policy: BreakerPolicy,
    target: Target,
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
        circuit = registry.get(breaker_key(target, policy, call.model), policy)
        # A grant the client left during is settled in the background (as "ignored").
        admitting = asyncio.ensure_future(admit(circuit))
        try:
            grant = await asyncio.shield(admitting)
        except asyncio.CancelledError:
            admitting.add_done_callback(
                lambda done: (
                    None
                    if done.cancelled() or done.exception() is not None
                    else later(circuit, done.result(), "ignored")
                )
            )
            raise
        held = call.scope.hold(lambda completion: later(circuit, grant, _settled(completion)))
        try:
            answer = await following(call)
        except AttemptFailed as failed:
            if held.take():
                failure = counts_as_failure(failed.failure)
                await asyncio.shield(settle(circuit, grant, "failure" if failure else "ignored"))
            raise
        except BaseException:
            held.release("cancelled")
            raise
        if answer.stream is None:
            if held.take():
                await asyncio.shield(settle(circuit, grant, _result(answer)))
        else:
            answer.held.append(held)
        return answer

    return breaker
