"""Token buckets and the local limiter on a fake clock: exact admits, waits and corrections."""

from __future__ import annotations

import pytest

from sidecar.policy.model import RateLimit
from sidecar.resilience.clock import FakeClock
from sidecar.traffic.bucket import Buckets, TokenBucket
from sidecar.traffic.limiter import MAX_LOCAL_KEYS, Limiter


def test_a_full_bucket_admits_its_capacity_then_says_how_long_to_wait() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=1.0, capacity=3, clock=clock)  # 60/minute, burst of 3
    assert [bucket.take(1) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(1) == pytest.approx(1.0)
    clock.advance(0.25)
    assert bucket.take(1) == pytest.approx(0.75)  # a refused take spends nothing
    clock.advance(0.75)
    assert bucket.take(1) == 0.0


def test_refill_never_exceeds_capacity() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=10.0, capacity=5, clock=clock)
    bucket.take(5)
    clock.advance(3600)
    assert bucket.level == 5


def test_a_cost_above_capacity_waits_for_a_full_bucket_instead_of_never_passing() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=2.0, capacity=10, clock=clock)
    bucket.take(4)  # 6 left
    assert bucket.take(1000) == pytest.approx(2.0)  # needs 10: 4 more at 2/s
    clock.advance(2)
    assert bucket.take(1000) == 0.0
    assert bucket.level == 0


def test_adjust_charges_a_debt_that_refill_pays_off() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=1.0, capacity=10, clock=clock)
    assert bucket.take(2) == 0.0
    bucket.adjust(13)  # the answer used 13 tokens more than estimated
    assert bucket.level == pytest.approx(-5)
    assert bucket.take(1) == pytest.approx(6.0)
    bucket.adjust(-100)  # a refund is capped at capacity
    assert bucket.level == 10


def test_requests_and_tokens_are_charged_together_or_not_at_all() -> None:
    clock = FakeClock()
    buckets = Buckets(RateLimit(requests_per_minute=60, tokens_per_minute=600), clock)
    assert buckets.requests is not None
    assert buckets.tokens is not None
    assert buckets.take(590) == 0.0
    assert buckets.take(20) == pytest.approx(1.0)  # tokens: 10 left, 20 needed at 10/s
    assert buckets.requests.level == pytest.approx(59)  # the refused request was not charged
    clock.advance(1)
    assert buckets.take(20) == 0.0


def test_burst_is_a_share_of_the_minute() -> None:
    clock = FakeClock()
    buckets = Buckets(RateLimit(requests_per_minute=600, burst=0.1), clock)
    admitted = 0
    while buckets.take(0) == 0.0:
        admitted += 1
    assert admitted == 60


async def test_limiter_keeps_buckets_by_name_and_restarts_them_when_the_limit_changes() -> None:
    clock = FakeClock()
    limiter = Limiter(clock)
    one = RateLimit(requests_per_minute=60, burst=1 / 60)  # one at a time
    assert await limiter.take("route:a:all", one, 0, None) == 0.0
    assert await limiter.take("route:a:all", one, 0, None) == pytest.approx(1.0)
    assert await limiter.take("route:b:all", one, 0, None) == 0.0  # another name
    two = RateLimit(requests_per_minute=120, burst=1 / 60)
    assert await limiter.take("route:a:all", two, 0, None) == 0.0  # a new limit, a new bucket


async def test_limiter_corrects_tokens_locally() -> None:
    clock = FakeClock()
    limiter = Limiter(clock)
    limit = RateLimit(tokens_per_minute=60)
    assert await limiter.take("u", limit, 50, None) == 0.0
    limiter.adjust_local("u", limit, 10)  # 60 used in all
    assert await limiter.take("u", limit, 1, None) == pytest.approx(1.0)
    await limiter.adjust("u", limit, -30, None)
    assert await limiter.take("u", limit, 30, None) == 0.0


async def test_limiter_bounds_its_per_client_buckets() -> None:
    limiter = Limiter(FakeClock())
    limit = RateLimit(requests_per_minute=10, key="client_key")
    for index in range(MAX_LOCAL_KEYS + 5):
        await limiter.take(f"route:r:{index}", limit, 0, None)
    assert len(limiter._local) <= MAX_LOCAL_KEYS
