"""The compiled policy: frozen, slotted, fully resolved objects the request path reads as is.

Nothing here parses or looks anything up by name at request time: durations
are seconds, sizes are bytes, a fallback target holds its Upstream object.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from sidecar.typedefs import WireFormat

Jitter = Literal["full", "equal", "none"]
BreakerKey = Literal["upstream", "upstream_model"]
ClientAuth = Literal["drop", "pass"]  # the client's own credential headers, to this upstream
RetryCondition = str | int  # "connect_error" | "reset" | "timeout" | HTTP status
REDACTED = "***redacted***"


@dataclass(frozen=True, slots=True)
class Secret:
    """A credential: its repr and str never show the value."""

    value: str = field(repr=False)

    def reveal(self) -> str:
        return self.value

    def __str__(self) -> str:
        return REDACTED

    def __repr__(self) -> str:
        return f"Secret({REDACTED!r})"


@dataclass(frozen=True, slots=True)
class Auth:
    header: str
    value: Secret


@dataclass(frozen=True, slots=True)
class RateLimit:
    """Token buckets per minute; ``burst`` is the share of a minute's allowance spendable at once.

    ``key``: "route", "client_key" or "header:<lower-cased name>" (route limits only).
    """

    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    burst: float = 1.0
    key: str = "route"
    # With key header:<name>, a request without the header: one bucket for all of them
    # ("shared"), a 400 ("reject"), or no limit ("unlimited").
    missing: Literal["shared", "reject", "unlimited"] = "shared"

    def describe(self, burst: bool = False) -> str:
        """``60 requests/min, 9000 tokens/min[, burst 50%][, per client_key]``."""
        parts = []
        if self.requests_per_minute is not None:
            parts.append(f"{self.requests_per_minute} requests/min")
        if self.tokens_per_minute is not None:
            parts.append(f"{self.tokens_per_minute} tokens/min")
        if burst:
            parts.append(f"burst {self.burst:.0%}")
        if self.key != "route":
            parts.append(f"per {self.key}")
        if self.key.startswith("header:"):
            parts.append(f"requests without it: {self.missing}")
        return ", ".join(parts)


@dataclass(frozen=True, slots=True)
class Upstream:
    name: str
    url: str  # no trailing slash
    format: WireFormat
    auth: Auth | None = None
    connect_timeout: float = 2.0
    max_connections: int = 256
    prefill: bool = False
    tools: bool = True
    rate_limit: RateLimit | None = None  # the provider's RPM/TPM: at the limit, skipped
    client_auth: ClientAuth = "drop"
    forward_headers: frozenset[str] = frozenset()  # lower-cased, within headers.CLIENT_CLAIMS


@dataclass(frozen=True, slots=True)
class Match:
    path: str
    prefix: bool = False
    methods: frozenset[str] | None = None  # None: any method
    model: str | None = None  # glob on the request body's "model"
    header: tuple[str, str] | None = None  # (lower-cased name, value glob)

    def matches(
        self,
        method: str,
        path: str,
        model: str | None,
        headers: Mapping[str, str],
        *,
        any_model: bool = False,
    ) -> bool:
        """Whether a request matches; *any_model*: as if its model matched (before the body)."""
        if self.prefix:
            if not path.startswith(self.path):
                return False
        elif path != self.path:
            return False
        if self.methods is not None and method not in self.methods:
            return False
        if (
            self.model is not None
            and not any_model
            and (model is None or not fnmatch.fnmatchcase(model, self.model))
        ):
            return False
        if self.header is not None:
            value = headers.get(self.header[0])
            if value is None or not fnmatch.fnmatchcase(value, self.header[1]):
                return False
        return True


@dataclass(frozen=True, slots=True)
class Validation:
    max_body: int = 1024 * 1024
    max_prompt_tokens: int | None = None


@dataclass(frozen=True, slots=True)
class Timeouts:
    connect: float | None = None  # None: the upstream's connect_timeout
    first_byte: float = 30.0
    idle: float = 30.0


@dataclass(frozen=True, slots=True)
class Backoff:
    base: float = 0.25
    max: float = 4.0
    multiplier: float = 2.0
    jitter: Jitter = "full"


@dataclass(frozen=True, slots=True)
class RetryAfter:
    honor: bool = True
    max_wait: float = 5.0


@dataclass(frozen=True, slots=True)
class Budget:
    ratio: float = 0.2
    min_per_second: float = 5.0


DEFAULT_RETRY_ON: frozenset[RetryCondition] = frozenset(
    {"connect_error", "reset", "timeout", 429, 500, 502, 503, 504, 529}
)


@dataclass(frozen=True, slots=True)
class Retry:
    attempts: int = 3
    on: frozenset[RetryCondition] = DEFAULT_RETRY_ON
    backoff: Backoff = Backoff()
    retry_after: RetryAfter = RetryAfter()
    budget: Budget = Budget()


@dataclass(frozen=True, slots=True)
class Window:
    size: float
    min_calls: int
    failure_rate: float


@dataclass(frozen=True, slots=True)
class Breaker:
    enabled: bool = True
    consecutive_failures: int | None = 5
    window: Window | None = None
    open_for: float = 30.0
    half_open_probes: int = 1
    key: BreakerKey = "upstream"


TargetWhen = Literal["always", "context_length_exceeded"]
BalanceStrategy = Literal["weighted", "round_robin", "least_in_flight", "lowest_latency"]


@dataclass(frozen=True, slots=True)
class Target:
    upstream: Upstream
    model: str | None = None
    model_map: tuple[tuple[str, str], ...] = ()
    when: TargetWhen = "always"  # context_length_exceeded: only after a too-long prompt
    weight: float = 1.0  # share of first picks within a tier (strategy weighted)

    def model_for(self, requested: str | None) -> str | None:
        """The model to send upstream for a request that asked for *requested*."""
        if self.model is not None:
            return self.model
        if requested is not None:
            for pattern, model in self.model_map:
                if fnmatch.fnmatchcase(requested, pattern):
                    return model
        return requested


@dataclass(frozen=True, slots=True)
class Tier:
    """Deployments of one model: one step of the fallback chain, in the order a balancer picks.

    Its targets are the very objects of ``Route.fallback`` (consecutive there), so
    everything that walks the flat list (continuation, explain) sees every deployment.
    """

    name: str  # stable key for balancer state: "<route>:<upstream>+<upstream>..."
    targets: tuple[Target, ...]
    strategy: BalanceStrategy = "weighted"


@dataclass(frozen=True, slots=True)
class Hedge:
    after: float  # no first byte (streams: first token) by then: one extra attempt on the next


@dataclass(frozen=True, slots=True)
class Translate:
    max_tokens: int = 4096  # for Anthropic targets when the OpenAI request sets none
    unsupported: Literal["error", "skip"] = "error"


@dataclass(frozen=True, slots=True)
class Access:
    keys: tuple[Secret, ...] = ()  # empty: no key needed
    localhost_only: bool = False


@dataclass(frozen=True, slots=True)
class Limits:
    max_in_flight: int = 1000  # requests of the route served at once, per process


@dataclass(frozen=True, slots=True)
class Continuation:
    enabled: bool = False
    target: Literal["next", "same"] = "next"


@dataclass(frozen=True, slots=True)
class Cache:
    enabled: bool = False
    when: Literal["deterministic", "always"] = "deterministic"
    ttl: float = 300.0
    max_entries: int = 1000
    max_entry_size: int = 1024 * 1024


@dataclass(frozen=True, slots=True)
class StateBackend:
    """Where buckets, breaker state and the cache live; ``url`` may hold a password."""

    backend: Literal["memory", "redis"] = "memory"
    url: Secret | None = None
    prefix: str = "sidecar"
    timeout: float = 0.05


@dataclass(frozen=True, slots=True)
class Route:
    name: str
    match: Match
    fallback: tuple[Target, ...]
    validate: Validation = Validation()
    deadline: float = 60.0
    timeouts: Timeouts = Timeouts()
    retry: Retry = Retry()
    breaker: Breaker = Breaker()
    translate: Translate = Translate()
    continuation: Continuation = Continuation()
    access: Access = Access()
    rate_limit: RateLimit | None = None
    cache: Cache = Cache()
    tiers: tuple[Tier, ...] = ()  # fallback steps made of several deployments
    hedge: Hedge | None = None
    limits: Limits = Limits()
    # Upstreams a request may name as its preference (x-sidecar-prefer / preferred_provider);
    # None: the route takes no preference. The compiler fills it from ``prefer:``.
    prefer: tuple[str, ...] | None = None

    def steps(self) -> tuple[Target | Tier, ...]:
        """The regular fallback chain as steps: a single target, or a whole tier."""
        tier_of = {id(target): tier for tier in self.tiers for target in tier.targets}
        steps: list[Target | Tier] = []
        for target in self.fallback:
            if target.when != "always":
                continue
            tier = tier_of.get(id(target))
            if tier is None:
                steps.append(target)
            elif not steps or steps[-1] is not tier:
                steps.append(tier)
        return tuple(steps)


@dataclass(frozen=True, slots=True)
class PolicySet:
    """Everything loaded from one policy directory at one moment."""

    hash: str
    files: tuple[str, ...]
    upstreams: Mapping[str, Upstream]
    routes: tuple[Route, ...]
    state: StateBackend = StateBackend()

    def route_for(
        self, method: str, path: str, model: str | None, headers: Mapping[str, str]
    ) -> Route | None:
        """The first route that matches, or None (the caller answers 404)."""
        for route in self.routes:
            if route.match.matches(method, path, model, headers):
                return route
        return None

    @property
    def needs_model(self) -> bool:
        """Whether any route matches on the body's model (so routing must read the body)."""
        return any(route.match.model is not None for route in self.routes)
