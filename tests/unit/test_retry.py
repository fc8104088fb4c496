"""Retry decisions: which failures are retryable, when to retry, when to move on."""

from __future__ import annotations

import random

import pytest

from sidecar.policy.model import Backoff, Budget, Retry, RetryAfter
from sidecar.resilience.backoff import BackoffStrategy
from sidecar.resilience.budget import RetryBudget
from sidecar.resilience.clock import FakeClock
from sidecar.resilience.deadline import Deadline
from sidecar.resilience.retry import (
    Failure,
    MoveOn,
    RetryAfterDelay,
    RetryPolicy,
    parse_retry_after,
)

NO_JITTER = Backoff(base=0.25, max=4.0, jitter="none")
PLENTY = Budget(ratio=0.0, min_per_second=100.0)


class CountingBudget(RetryBudget):
    """A real budget that also counts withdrawal attempts."""

    def __init__(self, policy: Budget, clock: FakeClock) -> None:
        super().__init__(policy, clock)
        self.asked = 0

    def try_withdraw(self) -> bool:
        self.asked += 1
        return super().try_withdraw()


def make(
    *,
    clock: FakeClock | None = None,
    seed: int = 0,
    budget: Budget = PLENTY,
    **retry: object,
) -> tuple[RetryPolicy, CountingBudget, FakeClock]:
    clock = clock or FakeClock()
    retry.setdefault("backoff", NO_JITTER)
    spent = CountingBudget(budget, clock)
    return RetryPolicy(Retry(**retry), spent, random.Random(seed)), spent, clock  # type: ignore[arg-type]


def deadline(clock: FakeClock, seconds: float = 60.0) -> Deadline:
    return Deadline.start(clock, seconds)


STATUS_503 = Failure("status", 503)


# -- retryable -----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["connect_error", "reset", "timeout"])
def test_listed_kinds_are_retryable(kind: str) -> None:
    policy, _, _ = make()
    assert policy.retryable(Failure(kind))  # type: ignore[arg-type]


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504, 529])
def test_listed_statuses_are_retryable(status: int) -> None:
    policy, _, _ = make()
    assert policy.retryable(Failure("status", status))


@pytest.mark.parametrize("status", [400, 401, 403, 404, 413, 422])
def test_client_errors_are_never_retryable(status: int) -> None:
    policy, _, _ = make()
    assert not policy.retryable(Failure("status", status))


def test_unlisted_failures_are_not_retryable() -> None:
    policy, _, _ = make(on=frozenset({503, "connect_error"}))
    assert policy.retryable(Failure("status", 503))
    assert policy.retryable(Failure("connect_error"))
    assert not policy.retryable(Failure("status", 500))
    assert not policy.retryable(Failure("status", 429))
    assert not policy.retryable(Failure("reset"))
    assert not policy.retryable(Failure("timeout"))
    assert not policy.retryable(Failure("status"))  # a status failure without a status


def test_first_byte_timeout_needs_timeout_listed() -> None:
    with_timeout, _, _ = make(on=frozenset({"timeout"}))
    without, _, _ = make(on=frozenset({"connect_error", 503}))
    assert with_timeout.retryable(Failure("first_byte_timeout"))
    assert not without.retryable(Failure("first_byte_timeout"))


def test_failure_label() -> None:
    assert Failure("status", 503).label == "503"
    assert Failure("timeout").label == "timeout"
    assert Failure("first_byte_timeout").label == "first_byte_timeout"


# -- decide --------------------------------------------------------------------------------


def test_retries_with_backoff_until_attempts_then_moves_on() -> None:
    policy, budget, clock = make(attempts=4)
    limit = deadline(clock)
    assert policy.decide(1, STATUS_503, limit) == RetryAfterDelay(0.25)
    assert policy.decide(2, STATUS_503, limit) == RetryAfterDelay(0.5)
    assert policy.decide(3, STATUS_503, limit) == RetryAfterDelay(1.0)
    assert policy.decide(4, STATUS_503, limit) == MoveOn("retries_exhausted")
    assert budget.asked == 3  # the exhausted decision charged nothing


def test_single_attempt_never_retries() -> None:
    policy, budget, clock = make(attempts=1)
    assert policy.decide(1, Failure("connect_error"), deadline(clock)) == MoveOn(
        "retries_exhausted"
    )
    assert budget.asked == 0


def test_first_byte_timeout_moves_on_at_once() -> None:
    policy, budget, clock = make(attempts=5)
    decision = policy.decide(1, Failure("first_byte_timeout"), deadline(clock))
    assert decision == MoveOn("first_byte")
    assert budget.asked == 0


def test_retry_after_is_honoured_exactly() -> None:
    policy, _, clock = make(retry_after=RetryAfter(honor=True, max_wait=5.0))
    limit = deadline(clock)
    assert policy.decide(1, Failure("status", 429, retry_after=1.7), limit) == RetryAfterDelay(1.7)
    assert policy.decide(1, Failure("status", 429, retry_after=5.0), limit) == RetryAfterDelay(5.0)
    assert policy.decide(1, Failure("status", 429, retry_after=0.0), limit) == RetryAfterDelay(0.0)


def test_retry_after_longer_than_max_wait_moves_on() -> None:
    policy, budget, clock = make(retry_after=RetryAfter(honor=True, max_wait=5.0))
    decision = policy.decide(1, Failure("status", 429, retry_after=5.001), deadline(clock))
    assert decision == MoveOn("retry_after_too_long")
    assert budget.asked == 0


def test_retry_after_ignored_when_not_honoured() -> None:
    policy, _, clock = make(retry_after=RetryAfter(honor=False, max_wait=5.0))
    limit = deadline(clock)
    assert policy.decide(1, Failure("status", 429, retry_after=30.0), limit) == RetryAfterDelay(
        0.25
    )
    assert policy.decide(2, Failure("status", 429, retry_after=0.01), limit) == RetryAfterDelay(0.5)


def test_backoff_that_does_not_fit_the_deadline_moves_on() -> None:
    clock = FakeClock()
    policy, budget, _ = make(clock=clock, attempts=10)
    limit = deadline(clock, 1.0)
    assert policy.decide(2, STATUS_503, limit) == RetryAfterDelay(0.5)
    assert policy.decide(3, STATUS_503, limit) == MoveOn("deadline")  # 1.0 leaves no time
    clock.advance(0.6)
    assert policy.decide(2, STATUS_503, limit) == MoveOn("deadline")  # 0.5 > 0.4 left
    assert policy.decide(1, STATUS_503, limit) == RetryAfterDelay(0.25)
    assert budget.asked == 2  # only the two retries were charged


def test_retry_after_that_does_not_fit_the_deadline_moves_on() -> None:
    clock = FakeClock()
    policy, budget, _ = make(clock=clock, retry_after=RetryAfter(honor=True, max_wait=10.0))
    decision = policy.decide(1, Failure("status", 503, retry_after=3.0), deadline(clock, 2.0))
    assert decision == MoveOn("deadline")
    assert budget.asked == 0


def test_expired_deadline_moves_on_even_for_zero_delay() -> None:
    clock = FakeClock()
    policy, _, _ = make(clock=clock)
    limit = deadline(clock, 1.0)
    clock.advance(1.0)
    assert policy.decide(1, Failure("status", 503, retry_after=0.0), limit) == MoveOn("deadline")


def test_budget_refusal_moves_on() -> None:
    clock = FakeClock()
    policy, budget, _ = make(clock=clock, budget=Budget(ratio=0.0, min_per_second=1.0))
    limit = deadline(clock)
    assert policy.decide(1, STATUS_503, limit) == RetryAfterDelay(0.25)
    assert policy.decide(1, STATUS_503, limit) == MoveOn("budget_exhausted")
    assert budget.asked == 2
    clock.advance(1.0)  # the reserve refills
    assert policy.decide(1, STATUS_503, limit) == RetryAfterDelay(0.25)


def test_budget_not_charged_when_moving_on_for_another_reason() -> None:
    clock = FakeClock()
    policy, budget, _ = make(
        clock=clock,
        attempts=2,
        budget=Budget(ratio=0.0, min_per_second=1.0),  # exactly one token
        retry_after=RetryAfter(honor=True, max_wait=1.0),
    )
    limit = deadline(clock, 0.3)
    assert policy.decide(2, STATUS_503, limit) == MoveOn("retries_exhausted")
    assert policy.decide(1, Failure("first_byte_timeout"), limit) == MoveOn("first_byte")
    assert policy.decide(1, Failure("status", 429, retry_after=2.0), limit) == MoveOn(
        "retry_after_too_long"
    )
    assert policy.decide(1, Failure("status", 429, retry_after=0.5), limit) == MoveOn("deadline")
    assert budget.asked == 0
    # The token is still there for a retry that does fit.
    assert policy.decide(1, STATUS_503, limit) == RetryAfterDelay(0.25)
    assert policy.decide(1, STATUS_503, limit) == MoveOn("budget_exhausted")


@pytest.mark.parametrize("jitter", ["full", "equal"])
def test_seeded_jitter_gives_exact_delays(jitter: str) -> None:
    backoff = Backoff(base=0.25, max=4.0, jitter=jitter)  # type: ignore[arg-type]
    policy, _, clock = make(seed=1234, attempts=6, backoff=backoff)
    twin = random.Random(1234)
    expected = BackoffStrategy(backoff)
    limit = deadline(clock)
    for attempt in range(1, 6):
        decision = policy.decide(attempt, STATUS_503, limit)
        assert decision == RetryAfterDelay(expected.delay(attempt, twin))


def test_same_seed_same_delays_different_seed_different_delays() -> None:
    full = Backoff(base=1.0, max=30.0, jitter="full")

    def delays(seed: int) -> list[object]:
        policy, _, clock = make(seed=seed, attempts=5, backoff=full)
        limit = deadline(clock)
        return [policy.decide(n, STATUS_503, limit) for n in range(1, 5)]

    assert delays(7) == delays(7)
    assert delays(7) != delays(8)


# -- parse_retry_after -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value_ms", "value", "expected"),
    [
        ("1500", "9", 1.5),  # retry-after-ms preferred
        ("0", "9", 0.0),
        (None, "3", 3.0),
        (None, " 2 ", 2.0),
        (None, "0.75", 0.75),
        ("250.5", None, 0.2505),
        ("soon", "4", 4.0),  # garbage ms: fall back to seconds
        ("-5", "4", 4.0),
        (None, "0", 0.0),
    ],
)
def test_parse_retry_after(value_ms: str | None, value: str | None, expected: float) -> None:
    assert parse_retry_after(value_ms, value) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("value_ms", "value"),
    [
        (None, None),
        (None, ""),
        (None, "soon"),
        (None, "-1"),
        ("-100", "-1"),
        (None, "nan"),
        (None, "Wed, 21 Oct 2015 07:28:00 GMT"),
        ("garbage", "Wed, 21 Oct 2015 07:28:00 GMT"),
    ],
)
def test_parse_retry_after_rejects(value_ms: str | None, value: str | None) -> None:
    assert parse_retry_after(value_ms, value) is None
