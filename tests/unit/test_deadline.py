"""Deadline: remaining, expired, clamp and allows_wait on a fake clock."""

from __future__ import annotations

import pytest

from sidecar.resilience.clock import FakeClock
from sidecar.resilience.deadline import Deadline


def test_start_and_remaining() -> None:
    clock = FakeClock(start=100.0)
    deadline = Deadline.start(clock, 10.0)
    assert deadline.expires_at == 110.0
    assert deadline.remaining() == 10.0
    clock.advance(4.0)
    assert deadline.remaining() == pytest.approx(6.0)
    assert not deadline.expired


def test_expired_exactly_at_and_after() -> None:
    clock = FakeClock(start=0.0)
    deadline = Deadline.start(clock, 2.0)
    clock.advance(1.999)
    assert not deadline.expired
    clock.advance(0.001)
    assert deadline.expired
    assert deadline.remaining() == 0.0
    clock.advance(5.0)
    assert deadline.expired
    assert deadline.remaining() == 0.0  # never negative


def test_zero_budget_is_expired_at_once() -> None:
    deadline = Deadline.start(FakeClock(), 0.0)
    assert deadline.expired
    assert deadline.remaining() == 0.0


def test_clamp() -> None:
    clock = FakeClock(start=0.0)
    deadline = Deadline.start(clock, 5.0)
    assert deadline.clamp(3.0) == 3.0
    assert deadline.clamp(5.0) == 5.0
    assert deadline.clamp(30.0) == 5.0
    clock.advance(4.5)
    assert deadline.clamp(3.0) == pytest.approx(0.5)
    clock.advance(10.0)
    assert deadline.clamp(3.0) == 0.0


def test_allows_wait_needs_time_left_after_the_wait() -> None:
    clock = FakeClock(start=0.0)
    deadline = Deadline.start(clock, 5.0)
    assert deadline.allows_wait(0.0)
    assert deadline.allows_wait(4.99)
    assert not deadline.allows_wait(5.0)  # nothing left for the attempt itself
    assert not deadline.allows_wait(6.0)
    clock.advance(5.0)
    assert not deadline.allows_wait(0.0)


async def test_sleeping_on_the_clock_consumes_the_deadline() -> None:
    clock = FakeClock(start=0.0)
    deadline = Deadline.start(clock, 1.0)
    await clock.sleep(0.75)
    assert deadline.remaining() == pytest.approx(0.25)
