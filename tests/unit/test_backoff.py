"""Backoff delays: exact ceilings, jitter bounds and seeded exact values."""

from __future__ import annotations

import random

import pytest

from sidecar.policy.model import Backoff
from sidecar.resilience.backoff import BackoffStrategy


def strategy(jitter: str = "none", **kwargs: float) -> BackoffStrategy:
    return BackoffStrategy(Backoff(jitter=jitter, **kwargs))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("retry", "expected"),
    [(1, 0.25), (2, 0.5), (3, 1.0), (4, 2.0), (5, 4.0), (6, 4.0), (10, 4.0)],
)
def test_ceiling_doubles_then_caps(retry: int, expected: float) -> None:
    assert strategy(base=0.25, max=4.0).ceiling(retry) == expected


def test_ceiling_with_other_multiplier() -> None:
    backoff = strategy(base=0.1, max=100.0, multiplier=3.0)
    assert [backoff.ceiling(n) for n in range(1, 6)] == pytest.approx(
        [0.1 * 3.0 ** (n - 1) for n in range(1, 6)]
    )
    assert strategy(base=0.5, max=10.0, multiplier=1.0).ceiling(7) == 0.5


def test_ceiling_of_retry_zero_or_negative_is_base() -> None:
    backoff = strategy(base=0.25, max=4.0)
    assert backoff.ceiling(0) == 0.25
    assert backoff.ceiling(-5) == 0.25


@pytest.mark.parametrize("retry", [64, 65, 1000, 10**9, 2**63])
@pytest.mark.parametrize("multiplier", [2.0, 10.0])
def test_huge_retry_numbers_do_not_overflow(retry: int, multiplier: float) -> None:
    backoff = strategy(base=0.25, max=4.0, multiplier=multiplier)
    assert backoff.ceiling(retry) == 4.0
    assert backoff.delay(retry, random.Random(1)) == 4.0


def test_none_jitter_is_the_ceiling() -> None:
    backoff = strategy("none", base=0.25, max=4.0)
    rng = random.Random(7)
    assert [backoff.delay(n, rng) for n in range(1, 7)] == [0.25, 0.5, 1.0, 2.0, 4.0, 4.0]


def test_full_jitter_bounds() -> None:
    backoff = strategy("full", base=0.25, max=4.0)
    rng = random.Random(3)
    for retry in range(1, 8):
        ceiling = backoff.ceiling(retry)
        for _ in range(200):
            assert 0.0 <= backoff.delay(retry, rng) <= ceiling


def test_full_jitter_exact_with_seed() -> None:
    backoff = strategy("full", base=0.25, max=4.0)
    rng, twin = random.Random(42), random.Random(42)
    for retry in range(1, 8):
        assert backoff.delay(retry, rng) == twin.uniform(0.0, backoff.ceiling(retry))


def test_equal_jitter_bounds_and_exact_with_seed() -> None:
    backoff = strategy("equal", base=0.25, max=4.0)
    rng, twin = random.Random(99), random.Random(99)
    for retry in range(1, 8):
        ceiling = backoff.ceiling(retry)
        value = backoff.delay(retry, rng)
        assert ceiling / 2 <= value <= ceiling
        assert value == ceiling / 2 + twin.uniform(0.0, ceiling / 2)
    for _ in range(200):
        assert 2.0 <= backoff.delay(5, rng) <= 4.0


def test_full_jitter_differs_between_seeds() -> None:
    backoff = strategy("full", base=1.0, max=10.0)
    assert backoff.delay(3, random.Random(1)) != backoff.delay(3, random.Random(2))
