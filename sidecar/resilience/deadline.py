"""One deadline for the whole chain: retries, backoff sleeps and fallbacks."""

from __future__ import annotations

from dataclasses import dataclass

from sidecar.resilience.clock import Clock


@dataclass(frozen=True, slots=True)
class Deadline:
    clock: Clock
    expires_at: float

    @classmethod
    def start(cls, clock: Clock, budget: float) -> Deadline:
        return cls(clock, clock.now() + budget)

    def remaining(self) -> float:
        return max(0.0, self.expires_at - self.clock.now())

    @property
    def expired(self) -> bool:
        return self.clock.now() >= self.expires_at

    def clamp(self, seconds: float) -> float:
        """*seconds*, but never past the deadline."""
        return min(seconds, self.remaining())

    def allows_wait(self, seconds: float) -> bool:
        """Whether sleeping *seconds* still leaves time for an attempt afterwards."""
        return seconds < self.remaining()
