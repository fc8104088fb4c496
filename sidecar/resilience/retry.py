"""Retry decisions: the engine decides (retry after a delay, or move on); callers do the I/O.

A failed attempt is described by a ``Failure``: a kind (``connect_error``,
``reset``, ``timeout``, ``first_byte_timeout``, ``status``) plus the status and
any Retry-After. ``RetryPolicy.decide`` answers with ``RetryAfter(delay)`` or
``MoveOn(reason)`` (next fallback target). Whether a failure may be retried or
failed over at all is ``retryable()``: anything else goes back to the client.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

from sidecar.policy.model import Retry
from sidecar.resilience.backoff import BackoffStrategy
from sidecar.resilience.budget import RetryBudget
from sidecar.resilience.deadline import Deadline

FailureKind = Literal["connect_error", "reset", "timeout", "first_byte_timeout", "status"]
MoveOnReason = Literal[
    "retries_exhausted", "retry_after_too_long", "deadline", "budget_exhausted", "first_byte"
]


@dataclass(frozen=True, slots=True)
class Failure:
    kind: FailureKind
    status: int | None = None
    retry_after: float | None = None  # seconds the upstream asked us to wait
    detail: str = ""

    @property
    def label(self) -> str:
        """For logs and metrics: the status, or the kind."""
        return str(self.status) if self.kind == "status" else self.kind


@dataclass(frozen=True, slots=True)
class RetryAfterDelay:
    delay: float


@dataclass(frozen=True, slots=True)
class MoveOn:
    reason: MoveOnReason


Decision = RetryAfterDelay | MoveOn


class RetryPolicy:
    """One route's retry rules, with its budget and a seeded-or-system RNG for jitter."""

    def __init__(self, policy: Retry, budget: RetryBudget, rng: random.Random) -> None:
        self.policy = policy
        self.budget = budget
        self._backoff = BackoffStrategy(policy.backoff)
        self._rng = rng

    def retryable(self, failure: Failure) -> bool:
        """Listed failures may be retried and failed over; anything else goes to the client."""
        if failure.kind == "first_byte_timeout":
            return "timeout" in self.policy.on
        if failure.kind == "status":
            return failure.status in self.policy.on
        return failure.kind in self.policy.on

    def decide(self, attempt: int, failure: Failure, deadline: Deadline) -> Decision:
        """After attempt number *attempt* (1-based) on a target failed with a retryable failure."""
        if failure.kind == "first_byte_timeout":
            return MoveOn("first_byte")
        if attempt >= self.policy.attempts:
            return MoveOn("retries_exhausted")
        honor = self.policy.retry_after
        if honor.honor and failure.retry_after is not None:
            if failure.retry_after > honor.max_wait:
                return MoveOn("retry_after_too_long")
            delay = failure.retry_after
        else:
            delay = self._backoff.delay(attempt, self._rng)
        if not deadline.allows_wait(delay):
            return MoveOn("deadline")
        if not self.budget.try_withdraw():
            return MoveOn("budget_exhausted")
        return RetryAfterDelay(delay)


def parse_retry_after(value_ms: str | None, value: str | None) -> float | None:
    """Seconds from ``retry-after-ms`` (preferred) or ``Retry-After``; HTTP dates are ignored."""
    for raw, scale in ((value_ms, 0.001), (value, 1.0)):
        if raw is None:
            continue
        try:
            seconds = float(raw.strip()) * scale
        except ValueError:
            continue
        if seconds >= 0:
            return seconds
    return None
