"""Tiers on the request path: ordering a tier's deployments, and feeding the balancer.

``TierStep.order(call)`` gives the tier's (name, chain) pairs in the order the
balancer picked for this request, deployments with an open breaker last. The
``load`` stage (per deployment, inside the breaker) counts attempts in flight
and their latency for the ``least_in_flight`` and ``lowest_latency`` strategies.
"""

from __future__ import annotations

from sidecar.pipeline.breaker import breaker_key
from sidecar.pipeline.call import Answer, AttemptFailed, Call, Handler, Stage
from sidecar.policy.model import Breaker as BreakerPolicy
from sidecar.policy.model import Target
from sidecar.resilience.balance import Balancer, Load
from sidecar.resilience.breaker import BreakerRegistry
from sidecar.resilience.clock import Clock

Candidate = tuple[str, Handler]  # upstream name, the deployment's per-target chain


class TierStep:
    """One fallback step made of several deployments, ordered per request."""

    __slots__ = ("_balancer", "_breakers", "_candidates", "_policies", "_targets")

    def __init__(
        self,
        balancer: Balancer,
        candidates: list[Candidate],
        breakers: BreakerRegistry,
        targets: list[tuple[Target, BreakerPolicy]],
    ) -> None:
        self._balancer = balancer
        self._candidates = candidates
        self._breakers = breakers
        self._targets = targets  # each deployment and its breaker settings, as the stage's

    def order(self, call: Call) -> list[Candidate]:
        blocked = [self._open(target, policy, call) for target, policy in self._targets]
        return [self._candidates[index] for index in self._balancer.order(blocked)]

    def _open(self, target: Target, policy: BreakerPolicy, call: Call) -> bool:
        breaker = self._breakers.find(breaker_key(target, policy, call.model))
        return breaker is not None and breaker.state == "open"


def make_load(load: Load, clock: Clock) -> Stage:
    """Count the attempt in flight until it ends (a stream: until its relay ends)."""

    async def measure(call: Call, following: Handler) -> Answer:
        load.started()
        held = call.scope.hold(lambda _: load.finished())
        started = clock.now()
        try:
            answer = await following(call)
        except AttemptFailed as failed:
            held.release("failure")
            status = failed.failure.status
            if status is None or status >= 500:  # a 4xx says nothing about the deployment
                load.observe(clock.now() - started, clock.now(), failed=True)
            raise
        except BaseException:
            held.release("cancelled")
            raise
        load.observe(clock.now() - started, clock.now())
        if answer.stream is None:
            held.release("success")
        else:
            answer.held.append(held)
        return answer

    return measure
