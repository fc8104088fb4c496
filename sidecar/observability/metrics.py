"""Prometheus metrics: one registry per app, low-cardinality labels, documented in docs/metrics.md.

Labels are names from the policy (route, upstream) or small fixed sets
(outcome, result, reason). Model labels are bounded: after ``MAX_MODELS``
distinct values a metric reports further models as ``_other``; breaker labels
likewise after ``MAX_BREAKER_LABELS`` (the state gauge then reports the worst
state of the rest as one ``_other`` sample); a value longer than
``MAX_LABEL_LENGTH`` is always ``_other``. Breaker state
and policy status are read from their owners at scrape time (a collector),
so nothing on the request path updates them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Final

from prometheus_client import (
    CollectorRegistry,
    Counter,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from sidecar.policy.store import PolicyStore
from sidecar.resilience.breaker import STATE_VALUES, BreakerEvent, BreakerRegistry

MAX_MODELS: Final = 64
MAX_BREAKER_LABELS: Final = 256
MAX_LABEL_LENGTH: Final = 400  # a breaker key: two names (≤ 64) and a model (≤ 256)
OTHER: Final = "_other"
# Seconds. LLM calls range from milliseconds (errors, cache) to minutes (long answers).
LATENCY_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
OVERHEAD_BUCKETS: Final = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1)


def status_class(status: int | None) -> str:
    return f"{status // 100}xx" if status else "none"


class BoundedLabel:
    """Passes through at most *limit* distinct values (none too long), then answers ``_other``."""

    def __init__(self, limit: int = MAX_MODELS) -> None:
        self._seen: set[str] = set()
        self._limit = limit

    def __call__(self, value: str | None) -> str:
        if value is None:
            return "none"
        if value in self._seen:
            return value
        if len(self._seen) < self._limit and len(value) <= MAX_LABEL_LENGTH:
            self._seen.add(value)
            return value
        return OTHER


# No `<name>_created` series: a timestamp per counter and histogram child that no
# dashboard reads, doubling what a scrape carries.
disable_created_metrics()  # type: ignore[no-untyped-call]


class Metrics:
    """Every metric the sidecar exports, in its own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        # The standard process_* (CPU, memory, fds) and python_* (GC, version) series.
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)
        self.requests = Counter(
            "sidecar_requests",
            "Client requests by route, outcome and status class.",
            ["route", "outcome", "status_class"],
            registry=r,
        )
        self.request_duration = Histogram(
            "sidecar_request_duration_seconds",
            "Time from request to the end of the answer (streams included), by status class.",
            ["route", "status_class"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.overhead = Histogram(
            "sidecar_overhead_seconds",
            "Time the sidecar spent on a request outside upstream calls and backoff sleeps "
            "(up to the answer's first byte).",
            ["route"],
            buckets=OVERHEAD_BUCKETS,
            registry=r,
        )
        self.attempts = Counter(
            "sidecar_upstream_attempts",
            "Upstream attempts by result: ok, 429, 4xx, 5xx, connect_error, reset, timeout, "
            "first_byte_timeout.",
            ["route", "upstream", "result"],
            registry=r,
        )
        self.attempt_duration = Histogram(
            "sidecar_upstream_attempt_duration_seconds",
            "Time from sending an attempt to its answer (streams: to the first token).",
            ["route", "upstream"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.ttft = Histogram(
            "sidecar_time_to_first_token_seconds",
            "Streams: time from sending the attempt to its first token.",
            ["route", "upstream"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.retries = Counter(
            "sidecar_retries", "Retries (attempts after the first on a target).",
            ["route", "upstream"], registry=r,
        )  # fmt: skip
        self.backoff = Histogram(
            "sidecar_backoff_seconds",
            "Backoff and Retry-After sleeps before retries.",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.fallbacks = Counter(
            "sidecar_fallbacks",
            "Moves from one target to the next, with the reason.",
            ["route", "from_upstream", "to_upstream", "reason"],
            registry=r,
        )
        self.hedges = Counter(
            "sidecar_hedges",
            "Hedged requests: a target had no first byte after hedge.after, so the next one was "
            "tried too. result: won (the hedge answered first), lost (the original did), "
            "failed (neither answered), refused (the retry budget said no: no hedge sent).",
            ["route", "from_upstream", "to_upstream", "result"],
            registry=r,
        )
        self.continuations = Counter(
            "sidecar_continuations",
            "Broken streams finished on another (or the same) target.",
            ["route", "upstream", "mode", "result"],
            registry=r,
        )
        self.shed = Counter(
            "sidecar_load_shed",
            "Requests refused (503) because a route limit was reached, by limit.",
            ["route", "limit"],
            registry=r,
        )
        self.client_cancellations = Counter(
            "sidecar_client_cancellations",
            "Requests whose client went away before the answer was complete.",
            ["route"],
            registry=r,
        )
        self.shutdown_aborted = Counter(
            "sidecar_shutdown_aborted_requests",
            "Requests still running when the shutdown grace period ended.",
            registry=r,
        )
        self.tokens = Counter(
            "sidecar_tokens",
            "Tokens reported in upstream usage, by kind (prompt, completion).",
            ["upstream", "model", "kind"],
            registry=r,
        )
        self.rate_limited = Counter(
            "sidecar_rate_limited",
            "Requests refused by a route's rate limit (scope route: 429 to the client) or "
            "targets skipped at an upstream's limit (scope upstream:<name>).",
            ["route", "scope"],
            registry=r,
        )
        self.state_errors = Counter(
            "sidecar_state_backend_errors",
            "Failed or timed-out calls to the shared state backend (Redis); the sidecar "
            "used its local state instead.",
            ["operation"],
            registry=r,
        )
        self.cache_requests = Counter(
            "sidecar_cache_requests",
            "Cacheable requests by cache result (hit: answered from the cache, no upstream call).",
            ["route", "result"],
            registry=r,
        )
        self.request_encodings = Counter(
            "sidecar_request_encodings",
            "Request bodies that carried a Content-Encoding, by coding (identity, gzip, "
            "deflate, br, zstd, compress, other, stacked) and result (decoded, identity, "
            "or the error code the client got).",
            ["encoding", "result"],
            registry=r,
        )
        self.breaker_transitions = Counter(
            "sidecar_breaker_transitions",
            "Circuit breaker state changes, by the state entered.",
            ["breaker", "state"],
            registry=r,
        )
        self.model_label = BoundedLabel()
        self.breaker_label = BoundedLabel(MAX_BREAKER_LABELS)
        # Label children resolved once: .labels() validates and locks on every call.
        self._finished: dict[tuple[str, str, str], tuple[Counter, Histogram]] = {}
        self._overheads: dict[str, Histogram] = {}
        self._token_children: dict[tuple[str, str | None], tuple[Counter, Counter]] = {}

    def finished(self, route: str, outcome: str, status: int | None, seconds: float) -> None:
        """Count one finished request and its duration."""
        key = (route, outcome, status_class(status))
        children = self._finished.get(key)
        if children is None:
            children = (self.requests.labels(*key), self.request_duration.labels(route, key[2]))
            self._finished[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def spent(self, route: str, seconds: float) -> None:
        """The sidecar's own time on a request (overhead)."""
        child = self._overheads.get(route)
        if child is None:
            child = self._overheads[route] = self.overhead.labels(route)
        child.observe(seconds)

    def watch(
        self,
        store: PolicyStore[object],
        breakers: BreakerRegistry,
        in_flight: Callable[[], int],
        shared: Callable[[], bool | None] = lambda: None,
    ) -> None:
        """Export the policy status, breaker states, requests in flight and whether the
        shared state backend answers, read at scrape time (nothing on the request path
        updates them). *shared*: True/False for Redis up/down, None for memory."""
        self.registry.register(
            _StateCollector(store, breakers, self.breaker_label, in_flight, shared)
        )
        breakers.listeners.append(self._on_breaker)

    def _on_breaker(self, event: BreakerEvent) -> None:
        state = {"BreakerOpened": "open", "BreakerHalfOpened": "half_open"}.get(
            type(event).__name__, "closed"
        )
        self.breaker_transitions.labels(self.breaker_label(event.key), state).inc()

    def count_tokens(self, upstream: str, model: str | None, prompt: int, completion: int) -> None:
        children = self._token_children.get((upstream, model))
        if children is None:
            label = self.model_label(model)
            children = (
                self.tokens.labels(upstream, label, "prompt"),
                self.tokens.labels(upstream, label, "completion"),
            )
            if len(self._token_children) < 4 * MAX_MODELS:
                self._token_children[(upstream, model)] = children
        if prompt:
            children[0].inc(prompt)
        if completion:
            children[1].inc(completion)


class _StateCollector(Collector):
    def __init__(
        self,
        store: PolicyStore[object],
        breakers: BreakerRegistry,
        label: Callable[[str], str],
        in_flight: Callable[[], int],
        shared: Callable[[], bool | None],
    ) -> None:
        self._store = store
        self._breakers = breakers
        self._label = label
        self._in_flight = in_flight
        self._shared = shared

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "sidecar_in_flight_requests", "Client requests being handled now.",
            value=self._in_flight(),
        )  # fmt: skip
        reloads = CounterMetricFamily(
            "sidecar_policy_reloads", "Policy reload attempts by result.", labels=["result"]
        )
        for result, count in self._store.counts.items():
            reloads.add_metric([result], count)
        yield reloads
        info = GaugeMetricFamily(
            "sidecar_policy_info", "The active policy (value 1), by content hash.",
            labels=["hash"],
        )  # fmt: skip
        if self._store.active is not None:
            info.add_metric([self._store.active.hash], 1)
        yield info
        loaded = GaugeMetricFamily(
            "sidecar_policy_loaded_timestamp_seconds", "When the active policy was loaded."
        )
        if self._store.loaded_at is not None:
            loaded.add_metric([], self._store.loaded_at)
        yield loaded
        state = GaugeMetricFamily(
            "sidecar_breaker_state",
            "Circuit breaker state: 0 closed, 1 half-open, 2 open.",
            labels=["breaker"],
        )
        others: int | None = None  # the worst state of the breakers past the label bound
        for breaker in self._breakers.all():
            label, value = self._label(breaker.key), STATE_VALUES[breaker.state]
            if label == OTHER:
                others = value if others is None else max(others, value)
            else:
                state.add_metric([label], value)
        if others is not None:
            state.add_metric([OTHER], others)
        yield state
        up = GaugeMetricFamily(
            "sidecar_state_backend_up",
            "1 while the shared state backend (Redis) answers, 0 while the sidecar runs on "
            "local state because it does not; absent with the memory backend.",
            labels=["backend"],
        )
        shared = self._shared()
        if shared is not None:
            up.add_metric(["redis"], 1 if shared else 0)
        yield up
