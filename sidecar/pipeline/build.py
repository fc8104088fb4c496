"""Compiling a route into its pipeline, once per policy load (never per request).

    respond ▶ [continuation ▶] [access ▶] validate ▶ [route limit ▶] [cache ▶] deadline ▶ fallback
        ─▶ for each target: adapter ▶ retry ▶ [upstream limit ▶] breaker ▶ [load ▶] meter ▶ attempt

A tier's deployments each get their own chain (the ``load`` stage feeds their
balancer); the tier is one fallback step that orders them per request.
State that must survive a reload (breakers, retry budgets, balancer state) comes
from registries keyed by stable names, so it carries over when names stay. With
``state: {backend: redis}`` the breaker stages share their state through the
policy's ``SharedStore`` (``registries.shared_breakers`` keeps the copies).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from sidecar.cache.store import Caches
from sidecar.observability.metrics import Metrics
from sidecar.pipeline.access import KeyGate, make_access, make_gate
from sidecar.pipeline.adapter import make_adapter
from sidecar.pipeline.attempt import AttemptDeps, make_attempt
from sidecar.pipeline.breaker import make_breaker
from sidecar.pipeline.cache import make_cache
from sidecar.pipeline.call import Answer, Call, Handler, fold
from sidecar.pipeline.continuation import make_continuation
from sidecar.pipeline.deadline import make_deadline
from sidecar.pipeline.fallback import make_fallback
from sidecar.pipeline.hedge import Hedging
from sidecar.pipeline.meter import make_meter
from sidecar.pipeline.prefer import make_prefer
from sidecar.pipeline.ratelimit import make_route_limit, make_upstream_limit
from sidecar.pipeline.respond import make_respond
from sidecar.pipeline.retry import make_retry
from sidecar.pipeline.tier import Candidate, TierStep, make_load
from sidecar.pipeline.validate import make_validate
from sidecar.policy.model import Breaker as BreakerPolicy
from sidecar.policy.model import PolicySet, Route, Target, Tier
from sidecar.policy.redaction import Scrubber, make_scrubber
from sidecar.resilience.balance import Balancer, BalanceRegistry
from sidecar.resilience.breaker import BreakerRegistry
from sidecar.resilience.budget import RetryBudget
from sidecar.resilience.clock import Clock
from sidecar.resilience.retry import RetryPolicy
from sidecar.shared.breakers import SharedBreakers
from sidecar.shared.redis import SharedStore, SharedStores
from sidecar.traffic.limiter import Limiter
from sidecar.upstream import UpstreamPools


@dataclass(slots=True)
class Registries:
    """Long-lived state, keyed by names that survive policy reloads."""

    clock: Clock
    breakers: BreakerRegistry
    metrics: Metrics = field(default_factory=Metrics)
    budgets: dict[str, RetryBudget] = field(default_factory=dict)
    rng: random.Random = field(default_factory=random.Random)
    balance: BalanceRegistry = field(default_factory=BalanceRegistry)
    limiter: Limiter | None = None
    shared: SharedStores | None = None
    shared_breakers: SharedBreakers | None = None
    caches: Caches | None = None

    def __post_init__(self) -> None:
        if self.shared_breakers is None:
            self.shared_breakers = SharedBreakers(self.clock)
        if self.limiter is None:
            self.limiter = Limiter(self.clock)
        if self.caches is None:
            self.caches = Caches(self.clock)
        if self.shared is None:
            errors = self.metrics.state_errors
            self.shared = SharedStores(self.clock, lambda op: errors.labels(op).inc())

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


@dataclass(frozen=True, slots=True)
class Runtime:
    """A policy and its compiled pipelines: swapped together, as one reference."""

    policy: PolicySet
    pipelines: dict[str, Pipeline]
    gate: KeyGate | None = None  # client keys checked at intake, before the body is read
    scrubber: Scrubber = field(default_factory=lambda: Scrubber(()))  # secrets an upstream echoes


def make_pipeline(
    route: Route,
    registries: Registries,
    pools: UpstreamPools,
    shared: SharedStore | None = None,
    policy_hash: str = "",
    breakers: dict[str, BreakerPolicy] | None = None,
    *,
    scrubber: Scrubber,
) -> Pipeline:
    """*breakers*: each upstream's breaker settings (``breaker_policies``); default: the route's.
    *scrubber*: the policy's secrets (``make_scrubber``), redacted from upstream echoes."""
    breaker_of = breakers or {}
    limiter = registries.limiter
    assert limiter is not None
    budget = registries.budget(route)
    policy = RetryPolicy(route.retry, budget, registries.rng)
    assert registries.shared_breakers is not None
    shared_breakers = (
        (shared, registries.shared_breakers, registries.clock) if shared is not None else None
    )
    chains: dict[int, Handler] = {}  # id(target) -> its chain
    larger: list[Candidate] = []
    regular: list[tuple[Target, Handler]] = []
    in_tier = {id(target) for tier in route.tiers for target in tier.targets}
    for target in route.fallback:
        name = target.upstream.name
        load = registries.balance.load(f"{route.name}:{name}") if id(target) in in_tier else None
        chain = fold(
            [
                make_adapter(route, target),
                make_retry(policy, registries.clock, name, registries.metrics, target.model_for),
                *(
                    [make_upstream_limit(target.upstream, limiter, shared, registries.metrics)]
                    if target.upstream.rate_limit is not None
                    else []
                ),
                make_breaker(
                    registries.breakers,
                    breaker_of.get(name, route.breaker),
                    target,
                    shared_breakers,
                ),
                *([make_load(load, registries.clock)] if load is not None else []),
                make_meter(registries.metrics, route.name, name),
            ],
            make_attempt(route, target, AttemptDeps(pools.session_for(target.upstream), scrubber)),
        )
        chains[id(target)] = chain
        if target.when == "always":
            regular.append((target, chain))
        else:
            larger.append((name, chain))

    steps: list[Candidate | TierStep] = []
    for step in route.steps():
        if isinstance(step, Tier):
            steps.append(_tier_step(route, step, chains, registries, breaker_of))
        else:
            steps.append((step.upstream.name, chains[id(step)]))
    hedging = None
    if route.hedge is not None:
        hedging = Hedging(route.hedge.after, registries.clock, budget, registries.metrics)

    access = make_access(route.access)
    route_limit = (
        [make_route_limit(route.name, route.rate_limit, limiter, shared, registries.metrics)]
        if route.rate_limit is not None
        else []
    )
    caches = registries.caches
    assert caches is not None
    cache = (
        [make_cache(route, caches.for_route(route.name, route.cache), shared, registries.metrics)]
        if route.cache.enabled
        else []
    )
    continuation = (
        [make_continuation(route, tuple(regular), budget, registries.metrics, scrubber)]
        if route.continuation.enabled
        else []
    )
    handle = fold(
        [
            make_respond(registries.metrics, policy_hash),
            *continuation,
            *([access] if access is not None else []),
            make_validate(route),
            make_prefer(route),
            *route_limit,
            *cache,
            make_deadline(route.deadline, registries.clock),
            make_fallback(steps, larger, registries.metrics, hedging),
        ],
        _terminal,
    )
    return Pipeline(route, handle, budget)


def _tier_step(
    route: Route,
    tier: Tier,
    chains: dict[int, Handler],
    registries: Registries,
    breakers: dict[str, BreakerPolicy],
) -> TierStep:
    balancer = Balancer(
        tier.strategy,
        [target.weight for target in tier.targets],
        [registries.balance.load(f"{route.name}:{t.upstream.name}") for t in tier.targets],
        registries.balance.rotation(tier.name),
        registries.rng,
        registries.clock,
    )
    candidates = [(target.upstream.name, chains[id(target)]) for target in tier.targets]
    settings = [(t, breakers.get(t.upstream.name, route.breaker)) for t in tier.targets]
    return TierStep(balancer, candidates, registries.breakers, settings)


def breaker_policies(policy: PolicySet) -> dict[str, BreakerPolicy]:
    """Each upstream's breaker settings: those of the first route (in policy order) using it.

    A breaker belongs to an upstream, not to a route, so routes sharing an upstream
    share its breaker; one set of settings must drive it (docs/policy.md).
    """
    settings: dict[str, BreakerPolicy] = {}
    for route in policy.routes:
        for target in route.fallback:
            settings.setdefault(target.upstream.name, route.breaker)
    return settings


def make_runtime(policy: PolicySet, registries: Registries, pools: UpstreamPools) -> Runtime:
    assert registries.shared is not None
    shared = registries.shared.use(policy.state)
    breakers = breaker_policies(policy)
    scrubber = make_scrubber(policy)  # compiled once per policy load, shared by every route
    return Runtime(
        policy,
        {
            route.name: make_pipeline(
                route, registries, pools, shared, policy.hash, breakers, scrubber=scrubber
            )
            for route in policy.routes
        },
        make_gate(policy),
        scrubber,
    )


async def _terminal(call: Call) -> Answer:  # pragma: no cover - the fallback stage never calls on
    raise AssertionError("the fallback stage is terminal")
