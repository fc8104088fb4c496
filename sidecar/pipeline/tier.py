"""Tiers on the request path: ordering a tier's deployments, and feeding the balancer.

``TierStep.order(call)`` gives the tier's (name, chain) pairs in the order the
balancer picked for this request, deployments with an open breaker last. The
``load`` stage (per deployment, inside the breaker) counts attempts in flight
and their latency for the ``least_in_flight`` and ``lowest_latency`` strategies.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from sidecar.pipeline.call import Answer, AttemptFailed, Call, Completion, Handler, Stage
from sidecar.policy.model import Breaker as BreakerPolicy
from sidecar.resilience.balance import Balancer, Load
from sidecar.resilience.breaker import BreakerRegistry
from sidecar.resilience.clock import Clock

Candidate = tuple[str, Handler]  # upstream name, the deployment's per-target chain


class TierStep:
    """One fallback step made of several deployments, ordered per request."""

    __slots__ = ("_balancer", "_breakers", "_candidates", "_keys", "_per_model")

    def __init__(
        self,
        balancer: Balancer,
        candidates: list[Candidate],
        breakers: BreakerRegistry,
        breaker: BreakerPolicy,
        route: str,
    ) -> None:
        self._balancer = balancer
        self._candidates = candidates
        self._breakers = breakers
        self._keys = [f"{route}:{name}" for name, _ in candidates]  # as the breaker stage's
        self._per_model = breaker.key == "upstream_model"

    def order(self, call: Call) -> list[Candidate]:
        blocked = [self._open(key, call) for key in self._keys]
        return [self._candidates[index] for index in self._balancer.order(blocked)]

    def _open(self, key: str, call: Call) -> bool:
        breaker = self._breakers.find(f"{key}:{call.model}" if self._per_model else key)
        return breaker is not None and breaker.state == "open"


def make_load(load: Load, clock: Clock) -> Stage:
    """Count the attempt in flight until it ends (a stream: until its relay ends)."""

    async def measure(call: Call, following: Handler) -> Answer:
        load.started()
        started = clock.now()
        try:
            answer = await following(call)
        except AttemptFailed as failed:
            load.finished()
            status = failed.failure.status
            if status is None or status >= 500:  # a 4xx says nothing about the deployment
                load.observe(clock.now() - started, clock.now(), failed=True)
            raise
        except (asyncio.CancelledError, Exception):
            load.finished()
            raise
        load.observe(clock.now() - started, clock.now())
        if answer.stream is None:
            load.finished()
        else:
            answer.on_done.append(_finisher(load))
        return answer

    return measure


def _finisher(load: Load) -> Callable[[Completion], None]:
    def done(completion: Completion) -> None:
        load.finished()

    return done
