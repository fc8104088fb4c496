"""Exponential backoff with jitter: the delay before retry number *n*."""

from __future__ import annotations

import random
from dataclasses import dataclass

from sidecar.policy.model import Backoff


@dataclass(frozen=True, slots=True)
class BackoffStrategy:
    """``base * multiplier**(n-1)``, capped at ``max``, then jittered."""

    policy: Backoff

    def ceiling(self, retry: int) -> float:
        """The un-jittered delay before retry *retry* (1 = the first retry)."""
        exponent = max(0, retry - 1)
        # Cap the exponent so the float never overflows on absurd attempt counts.
        raw = self.policy.base * self.policy.multiplier ** min(exponent, 64)
        return min(self.policy.max, raw)

    def delay(self, retry: int, rng: random.Random) -> float:
        """The jittered delay: full = U(0, d), equal = d/2 + U(0, d/2), none = d."""
        ceiling = self.ceiling(retry)
        match self.policy.jitter:
            case "full":
                return rng.uniform(0.0, ceiling)
            case "equal":
                return ceiling / 2 + rng.uniform(0.0, ceiling / 2)
            case _:
                return ceiling
