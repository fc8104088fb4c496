"""The compiled policy: frozen, slotted, fully resolved objects the request path reads as is.

Nothing here parses or looks anything up by name at request time: durations
are seconds, sizes are bytes, a fallback target holds its Upstream object.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

WireFormat = Literal["openai", "anthropic"]
Jitter = Literal["full", "equal", "none"]
BreakerKey = Literal["upstream", "upstream_model"]
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
class Upstream:
    name: str
    url: str  # no trailing slash
    format: WireFormat
    auth: Auth | None = None
    connect_timeout: float = 2.0
    max_connections: int = 256
    prefill: bool = False
    tools: bool = True


@dataclass(frozen=True, slots=True)
class Match:
    path: str
    prefix: bool = False
    methods: frozenset[str] | None = None  # None: any method
    model: str | None = None  # glob on the request body's "model"
    header: tuple[str, str] | None = None  # (lower-cased name, value glob)

    def matches(
        self, method: str, path: str, model: str | None, headers: Mapping[str, str]
    ) -> bool:
        if self.prefix:
            if not path.startswith(self.path):
                return False
        elif path != self.path:
            return False
        if self.methods is not None and method not in self.methods:
            return False
        if self.model is not None and (model is None or not fnmatch.fnmatchcase(model, self.model)):
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


@dataclass(frozen=True, slots=True)
class Target:
    upstream: Upstream
    model: str | None = None
    model_map: tuple[tuple[str, str], ...] = ()
    when: TargetWhen = "always"  # context_length_exceeded: only after a too-long prompt

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
    limits: Limits = Limits()


@dataclass(frozen=True, slots=True)
class PolicySet:
    """Everything loaded from one policy directory at one moment."""

    hash: str
    files: tuple[str, ...]
    upstreams: Mapping[str, Upstream]
    routes: tuple[Route, ...]

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
