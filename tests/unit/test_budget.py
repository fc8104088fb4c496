"""RetryBudget: a per-second reserve plus ratio deposits, capped, exhaustible."""

from __future__ import annotations

import pytest

from sidecar.policy.model import Budget
from sidecar.resilience.budget import RetryBudget
from sidecar.resilience.clock import FakeClock


def drain(budget: RetryBudget, limit: int = 10_000) -> int:
    """Withdraw until refused; the number of retries granted."""
    granted = 0
    while budget.try_withdraw():
        granted += 1
        assert granted < limit, "the budget never ran out"
    return granted


def test_reserve_starts_full_then_is_exhausted() -> None:
    budget = RetryBudget(Budget(ratio=0.0, min_per_second=3.0), FakeClock())
    assert drain(budget) == 3
    assert budget.try_withdraw() is False


def test_reserve_refills_with_time() -> None:
    clock = FakeClock()
    budget = RetryBudget(Budget(ratio=0.0, min_per_second=4.0), clock)
    assert drain(budget) == 4
    clock.advance(0.2)  # 0.8 tokens: not a whole one
    assert budget.try_withdraw() is False
    clock.advance(0.05)  # 0.8 + 0.2 = 1.0
    assert budget.try_withdraw() is True
    assert budget.try_withdraw() is False
    clock.advance(0.5)
    assert drain(budget) == 2


def test_reserve_is_capped_at_one_seconds_worth() -> None:
    clock = FakeClock()
    budget = RetryBudget(Budget(ratio=0.0, min_per_second=5.0), clock)
    assert drain(budget) == 5
    clock.advance(3600.0)  # a quiet hour banks no more than one second
    assert drain(budget) == 5


def test_fractional_min_per_second_still_allows_a_retry() -> None:
    clock = FakeClock()
    budget = RetryBudget(Budget(ratio=0.0, min_per_second=0.5), clock)
    clock.advance(2.0)  # 0.5/s for 2 s: one retry
    assert budget.try_withdraw() is True
    assert budget.try_withdraw() is False
    clock.advance(1.0)
    assert budget.try_withdraw() is False
    clock.advance(1.0)
    assert budget.try_withdraw() is True


def test_zero_everything_never_retries() -> None:
    clock = FakeClock()
    budget = RetryBudget(Budget(ratio=0.0, min_per_second=0.0), clock)
    budget.deposit()
    clock.advance(100.0)
    assert budget.try_withdraw() is False


@pytest.mark.parametrize(("ratio", "requests"), [(0.2, 5), (0.1, 10), (0.25, 4), (0.5, 2)])
def test_ratio_deposits_fund_retries(ratio: float, requests: int) -> None:
    budget = RetryBudget(Budget(ratio=ratio, min_per_second=0.0), FakeClock())
    for _ in range(requests - 1):
        budget.deposit()
    assert budget.try_withdraw() is False
    budget.deposit()
    assert budget.try_withdraw() is True
    assert budget.try_withdraw() is False


def test_ratio_third_of_three_requests() -> None:
    budget = RetryBudget(Budget(ratio=0.3, min_per_second=0.0), FakeClock())
    for _ in range(10):
        budget.deposit()  # 3.0 tokens
    assert drain(budget) == 3


def test_ratio_tokens_are_capped() -> None:
    # The cap is a hundred requests' worth (at least one token).
    budget = RetryBudget(Budget(ratio=0.2, min_per_second=0.0), FakeClock())
    for _ in range(10_000):
        budget.deposit()
    assert drain(budget) == 20


def test_tiny_ratio_cap_is_at_least_one_token() -> None:
    budget = RetryBudget(Budget(ratio=0.001, min_per_second=0.0), FakeClock())
    for _ in range(5000):
        budget.deposit()
    assert drain(budget) == 1


def test_reserve_is_spent_before_ratio_tokens() -> None:
    clock = FakeClock()
    budget = RetryBudget(Budget(ratio=0.5, min_per_second=1.0), clock)
    budget.deposit()
    budget.deposit()  # one ratio token
    assert budget.try_withdraw() is True  # the reserve's token
    assert budget.try_withdraw() is True  # the ratio token
    assert budget.try_withdraw() is False


def test_reconfigure_keeps_the_balance() -> None:
    clock = FakeClock()
    budget = RetryBudget(Budget(ratio=0.5, min_per_second=0.0), clock)
    for _ in range(6):
        budget.deposit()  # 3 tokens
    budget.reconfigure(Budget(ratio=0.1, min_per_second=0.0))
    assert budget.policy == Budget(ratio=0.1, min_per_second=0.0)
    assert drain(budget) == 3
    for _ in range(10):
        budget.deposit()  # the new ratio applies to new requests
    assert drain(budget) == 1


def test_reconfigure_lower_reserve_caps_it() -> None:
    clock = FakeClock()
    budget = RetryBudget(Budget(ratio=0.0, min_per_second=10.0), clock)
    budget.reconfigure(Budget(ratio=0.0, min_per_second=2.0))
    assert drain(budget) == 2
    clock.advance(60.0)
    assert drain(budget) == 2
