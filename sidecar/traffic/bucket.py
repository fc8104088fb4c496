"""Token buckets on an injected clock: pure arithmetic, no I/O.

A bucket holds up to ``capacity`` tokens and refills at ``rate`` tokens per
second. ``take(cost)`` either spends *cost* and answers 0, or spends nothing
and answers how many seconds until it could (the accurate Retry-After). A
cost larger than the capacity is treated as the capacity: a request bigger
than a minute's allowance waits for a full bucket instead of never passing.
``adjust(delta)`` corrects an earlier estimate afterwards (tokens/minute from
the answer's usage); the level may go below zero (a debt paid off by refill).

``Buckets`` pairs a requests and a tokens bucket so that a request is admitted
only when both have room, and charged to both or to neither. The Redis script
in ``sidecar.traffic.limiter`` does the same arithmetic on the server.
"""

from __future__ import annotations

from sidecar.policy.model import RateLimit
from sidecar.resilience.clock import Clock


class TokenBucket:
    __slots__ = ("_clock", "_level", "_updated", "capacity", "rate")

    def __init__(self, rate: float, capacity: float, clock: Clock) -> None:
        self.rate = rate
        self.capacity = capacity
        self._clock = clock
        self._level = capacity
        self._updated = clock.now()

    def _refill(self) -> float:
        now = self._clock.now()
        self._level = min(self.capacity, self._level + (now - self._updated) * self.rate)
        self._updated = now
        return self._level

    @property
    def level(self) -> float:
        return self._refill()

    def wait_for(self, cost: float) -> float:
        """Seconds until *cost* tokens are available (0: now); spends nothing."""
        needed = min(cost, self.capacity)
        level = self._refill()
        return 0.0 if level >= needed else (needed - level) / self.rate

    def spend(self, cost: float) -> None:
        self._refill()
        self._level -= min(cost, self.capacity)

    def take(self, cost: float) -> float:
        wait = self.wait_for(cost)
        if wait == 0.0:
            self.spend(cost)
        return wait

    def adjust(self, delta: float) -> None:
        """Charge *delta* more tokens (or refund a negative delta), capped at capacity."""
        self._refill()
        self._level = min(self.capacity, self._level - delta)


class Buckets:
    """A requests/minute and a tokens/minute bucket, admitted together."""

    __slots__ = ("limit", "requests", "tokens")

    def __init__(self, limit: RateLimit, clock: Clock) -> None:
        self.limit = limit
        self.requests = _bucket(limit.requests_per_minute, limit.burst, clock)
        self.tokens = _bucket(limit.tokens_per_minute, limit.burst, clock)

    def take(self, tokens: int) -> float:
        """0 when the request is admitted (both charged); else seconds to wait (none charged)."""
        wait = 0.0
        if self.requests is not None:
            wait = self.requests.wait_for(1)
        if self.tokens is not None:
            wait = max(wait, self.tokens.wait_for(tokens))
        if wait == 0.0:
            if self.requests is not None:
                self.requests.spend(1)
            if self.tokens is not None:
                self.tokens.spend(tokens)
        return wait

    def adjust(self, tokens: int) -> None:
        if self.tokens is not None:
            self.tokens.adjust(tokens)

    @property
    def full(self) -> bool:
        """Both buckets at capacity: the same as a fresh pair (nothing to lose)."""
        return all(
            bucket is None or bucket.level >= bucket.capacity
            for bucket in (self.requests, self.tokens)
        )


def _bucket(per_minute: int | None, burst: float, clock: Clock) -> TokenBucket | None:
    if per_minute is None:
        return None
    return TokenBucket(per_minute / 60.0, max(1.0, per_minute * burst), clock)
