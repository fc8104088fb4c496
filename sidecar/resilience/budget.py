"""A retry budget: retries may be at most a ratio of requests, plus a small floor per second.

Theory of operation: every request deposits ``ratio`` tokens (capped, so a
quiet minute does not bank an unlimited storm); every retry withdraws one.
Independently a reserve refills at ``min_per_second`` (capped at one second's
worth, but at least one token), so a low-traffic service can still retry.
A retry is allowed when either holds a whole token. A denied retry goes to the
next fallback target.
"""

from __future__ import annotations

from typing import Final

from sidecar.policy.model import Budget
from sidecar.resilience.clock import Clock

# Sums of float ratios drift (ten deposits of 0.1 are 0.9999999999999999): a token
# within this of whole counts as whole.
_WHOLE: Final = 1.0 - 1e-9


class RetryBudget:
    def __init__(self, policy: Budget, clock: Clock) -> None:
        self._clock = clock
        self._ratio_tokens = 0.0
        self._reserve = policy.min_per_second
        self._refilled_at = clock.now()
        self.policy = policy

    @property
    def _cap(self) -> float:
        return max(1.0, self.policy.ratio * 100)

    def reconfigure(self, policy: Budget) -> None:
        """Take new settings (after a reload), keeping the balance."""
        self.policy = policy

    def deposit(self) -> None:
        """Count one request."""
        self._ratio_tokens = min(self._cap, self._ratio_tokens + self.policy.ratio)

    def try_withdraw(self) -> bool:
        """Spend a token for one retry; False when the budget is exhausted."""
        self._refill()
        if self._reserve >= _WHOLE:
            self._reserve = max(0.0, self._reserve - 1.0)
            return True
        if self._ratio_tokens >= _WHOLE:
            self._ratio_tokens = max(0.0, self._ratio_tokens - 1.0)
            return True
        return False

    def _refill(self) -> None:
        now = self._clock.now()
        elapsed = max(0.0, now - self._refilled_at)
        self._refilled_at = now
        floor = self.policy.min_per_second
        # At least one whole token, so a floor below 1/s still allows a retry now and then.
        self._reserve = min(max(floor, 1.0), self._reserve + elapsed * floor)
