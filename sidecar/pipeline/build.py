"""Compiling a route into its pipeline, once per policy load (never per request).

    [access ▶] validate ▶ deadline ▶ fallback
        ─▶ for each target: adapter ▶ retry ▶ breaker ▶ meter ▶ attempt

State that must survive a reload (breakers, retry budgets) comes from
registries keyed by stable names, so it carries over when names stay.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from sidecar.observability.metrics import Metrics
from sidecar.pipeline.access import make_access
from sidecar.pipeline.adapter import make_adapter
from sidecar.pipeline.attempt import AttemptDeps, make_attempt
from sidecar.pipeline.breaker import make_breaker
from sidecar.pipeline.call import Answer, Call, Handler, fold
from sidecar.pipeline.deadline import make_deadline
from sidecar.pipeline.fallback import make_fallback
from sidecar.pipeline.meter import make_meter
from sidecar.pipeline.retry import make_retry
from sidecar.pipeline.validate import make_validate
from sidecar.policy.model import PolicySet, Route, Target
from sidecar.resilience.breaker import BreakerRegistry
from sidecar.resilience.budget import RetryBudget
from sidecar.resilience.clock import Clock
from sidecar.resilience.retry import RetryPolicy
from sidecar.upstream import UpstreamPools


@dataclass(slots=True)
class Registries:
    """Long-lived state, keyed by names that survive policy reloads."""

    clock: Clock
    breakers: BreakerRegistry
    metrics: Metrics = field(default_factory=Metrics)
    budgets: dict[str, RetryBudget] = field(default_factory=dict)
    rng: random.Random = field(default_factory=random.Random)
    in_flight: dict[str, int] = field(default_factory=dict)  # requests being served, per route

    def budget(self, route: Route) -> RetryBudget:
        budget = self.budgets.get(route.name)
        if budget is None:
            budget = RetryBudget(route.retry.budget, self.clock)
            self.budgets[route.name] = budget
        else:
            budget.reconfigure(route.retry.budget)
        return budget


@dataclass(frozen=True, slots=True)
class Pipeline:
    route: Route
    handle: Handler
    budget: RetryBudget
    targets: tuple[tuple[Target, Handler], ...]  # regular targets, for continuation


@dataclass(frozen=True, slots=True)
class Runtime:
    """A policy and its compiled pipelines: swapped together, as one reference."""

    policy: PolicySet
    pipelines: dict[str, Pipeline]


def make_pipeline(route: Route, registries: Registries, pools: UpstreamPools) -> Pipeline:
    budget = registries.budget(route)
    policy = RetryPolicy(route.retry, budget, registries.rng)
    targets = []
    regular: list[tuple[Target, Handler]] = []
    for target in route.fallback:
        name = target.upstream.name
        chain = fold(
            [
                make_adapter(route, target),
                make_retry(policy, registries.clock, name, registries.metrics),
                make_breaker(registries.breakers, route.breaker, route.name, name),
                make_meter(registries.metrics, route.name, name),
            ],
            make_attempt(route, target, AttemptDeps(pools.session_for(target.upstream))),
        )
        targets.append((name, chain, target.when))
        if target.when == "always":
            regular.append((target, chain))

    access = make_access(route.access)
    handle = fold(
        [
            *([access] if access is not None else []),
            make_validate(route),
            make_deadline(route.deadline, registries.clock),
            make_fallback(targets, registries.metrics),
        ],
        _terminal,
    )
    return Pipeline(route, handle, budget, tuple(regular))


def make_runtime(policy: PolicySet, registries: Registries, pools: UpstreamPools) -> Runtime:
    return Runtime(
        policy,
        {route.name: make_pipeline(route, registries, pools) for route in policy.routes},
    )


async def _terminal(call: Call) -> Answer:  # pragma: no cover - the fallback stage never calls on
    raise AssertionError("the fallback stage is terminal")
