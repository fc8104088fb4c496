"""Shared breakers, the pure parts: script replies, the decision before an attempt, and the
local breaker following a shared state (its events), on a fake clock. The Lua scripts
run against a real Redis in tests/integration/test_shared_state.py."""

from __future__ import annotations

import pytest

from sidecar.policy.model import Breaker
from sidecar.resilience.breaker import BreakerEvent, CircuitBreaker
from sidecar.resilience.clock import FakeClock
from sidecar.shared.breakers import REFRESH, SharedState, decide, follow, parse


def state(name: str, retry_in: float = 0.0, probes: int = 0, at: float = 0.0) -> SharedState:
    return SharedState(name, 0, retry_in, probes, 1, at)  # type: ignore[arg-type]


def local() -> tuple[CircuitBreaker, FakeClock, list[str]]:
    clock = FakeClock(start=0.0)
    names: list[str] = []

    def listen(event: BreakerEvent) -> None:
        names.append(type(event).__name__)

    return CircuitBreaker("r:up", Breaker(open_for=10.0), clock, [listen]), clock, names


def test_parse_reads_a_redis_reply() -> None:
    view, extra = parse([b"open", 3, b"9.5", 0, 7, 1], now=100.0)
    assert view == SharedState("open", 3, 9.5, 0, 7, 100.0)
    assert extra == 1
    assert view.remaining(104.0) == pytest.approx(5.5)
    assert view.remaining(200.0) == 0.0
    assert parse([b"closed", 0, b"0", 0, 0, 0], 0.0)[0].state == "closed"


def test_remaining_is_zero_unless_open() -> None:
    assert state("half_open", retry_in=5.0).remaining(0.0) == 0.0


@pytest.mark.parametrize(
    ("view", "now", "expected"),
    [
        (None, 0.0, "local"),  # unknown or Redis unavailable: the local breaker decides
        (state("closed"), 0.0, "local"),  # the hot path: no Redis call
        (state("open", retry_in=5.0), 4.9, "reject"),  # open, still waiting: no Redis call
        (state("open", retry_in=5.0), 5.0, "ask"),  # due: Redis grants the probe slots
        (state("half_open", probes=0), 0.0, "ask"),
        (state("half_open", probes=1), 0.0, "reject"),  # every slot taken (fresh copy)
        (state("half_open", probes=1), REFRESH, "ask"),  # stale copy: ask again
    ],
)
def test_decide(view: SharedState | None, now: float, expected: str) -> None:
    assert decide(view, probes=1, now=now) == expected


def test_follow_open_emits_once_and_aligns_the_timer() -> None:
    breaker, clock, names = local()
    follow(breaker, state("open", retry_in=4.0), clock.now(), "5 consecutive failures")
    follow(breaker, state("open", retry_in=4.0), clock.now())
    assert breaker.state == "open"
    assert names == ["BreakerOpened"]
    assert breaker.retry_in() == pytest.approx(4.0)
    assert breaker.acquire() is None  # it rejects like its shared breaker
    clock.advance(4.0)
    assert breaker.state == "half_open"
    assert names == ["BreakerOpened", "BreakerHalfOpened"]


def test_follow_an_open_breaker_whose_time_is_up_is_half_open_without_flapping() -> None:
    breaker, clock, names = local()
    follow(breaker, state("open", retry_in=1.0), clock.now())
    clock.advance(1.0)
    assert breaker.state == "half_open"
    follow(breaker, state("open", retry_in=0.0), clock.now())  # Redis moves when asked
    assert names == ["BreakerOpened", "BreakerHalfOpened"]


def test_follow_closed_and_reopened() -> None:
    breaker, clock, names = local()
    follow(breaker, state("half_open"), clock.now())
    follow(breaker, state("closed"), clock.now())
    follow(breaker, state("open", retry_in=10.0), clock.now())
    assert names == ["BreakerHalfOpened", "BreakerClosed", "BreakerOpened"]
    assert breaker.state == "open"


def test_count_changes_counts_not_state() -> None:
    breaker, _, names = local()
    for result in ("failure",) * 9 + ("success", "rejected", "ignored"):
        breaker.count(result)  # type: ignore[arg-type]
    assert (breaker.failures, breaker.successes, breaker.rejections) == (9, 1, 1)
    assert breaker.state == "closed"
    assert names == []


def test_local_breaker_decides_alone_from_the_mirrored_state() -> None:
    """Redis gone while the shared breaker was open: the local one carries on from there."""
    breaker, clock, names = local()
    follow(breaker, state("open", retry_in=2.0), clock.now())
    assert breaker.acquire() is None
    clock.advance(2.0)
    permit = breaker.acquire()
    assert permit is not None
    assert permit.probe
    breaker.record(permit, "success")
    assert breaker.state == "closed"
    assert names == ["BreakerOpened", "BreakerHalfOpened", "BreakerClosed"]
