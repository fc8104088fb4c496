"""Circuit breaker: every transition of the state table, on a fake clock."""

from __future__ import annotations

from typing import Any

import pytest

from sidecar.policy.model import Breaker, Window
from sidecar.resilience.breaker import (
    STATE_VALUES,
    BreakerClosed,
    BreakerEvent,
    BreakerHalfOpened,
    BreakerOpened,
    BreakerRegistry,
    CircuitBreaker,
    Permit,
)
from sidecar.resilience.clock import FakeClock


def make(
    policy: Breaker | None = None, **kwargs: Any
) -> tuple[CircuitBreaker, FakeClock, list[BreakerEvent]]:
    clock = FakeClock(start=0.0)
    events: list[BreakerEvent] = []
    policy = policy or Breaker(**{"consecutive_failures": 3, "open_for": 10.0, **kwargs})
    return CircuitBreaker("up", policy, clock, [events.append]), clock, events


def call(breaker: CircuitBreaker, result: str) -> Permit:
    permit = breaker.acquire()
    assert permit is not None, f"rejected while {breaker.state}"
    breaker.record(permit, result)  # type: ignore[arg-type]
    return permit


def trip(breaker: CircuitBreaker, failures: int = 3) -> None:
    for _ in range(failures):
        call(breaker, "failure")
    assert breaker.state == "open"


def kinds(events: list[BreakerEvent]) -> list[str]:
    return [type(event).__name__ for event in events]


# -- closed -------------------------------------------------------------------------------


def test_closed_opens_after_consecutive_failures() -> None:
    breaker, clock, events = make()
    call(breaker, "failure")
    call(breaker, "failure")
    assert breaker.state == "closed"
    assert events == []
    clock.advance(1.0)
    call(breaker, "failure")
    assert breaker.state == "open"
    assert events == [BreakerOpened("up", 1.0, "3 consecutive failures")]


def test_success_resets_the_consecutive_count() -> None:
    breaker, _, events = make()
    for _ in range(5):
        call(breaker, "failure")
        call(breaker, "failure")
        call(breaker, "success")
    assert breaker.state == "closed"
    assert events == []
    assert breaker.failures == 10
    assert breaker.successes == 5


def test_ignored_neither_counts_nor_resets() -> None:
    breaker, _, _ = make()
    call(breaker, "failure")
    call(breaker, "failure")
    call(breaker, "ignored")
    assert breaker.snapshot()["consecutive_failures"] == 2
    assert (breaker.failures, breaker.successes) == (2, 0)
    call(breaker, "failure")
    assert breaker.state == "open"


def test_consecutive_failures_of_one() -> None:
    breaker, _, _ = make(consecutive_failures=1)
    call(breaker, "failure")
    assert breaker.state == "open"


# -- failure-rate window ---------------------------------------------------------------------


def window_breaker(
    size: float = 10.0, min_calls: int = 4, rate: float = 0.5
) -> tuple[CircuitBreaker, FakeClock, list[BreakerEvent]]:
    policy = Breaker(consecutive_failures=None, window=Window(size, min_calls, rate), open_for=5.0)
    return make(policy)


def test_window_respects_min_calls() -> None:
    breaker, _, _ = window_breaker(min_calls=4)
    for _ in range(3):
        call(breaker, "failure")  # 100% failures, but only 3 calls
    assert breaker.state == "closed"
    call(breaker, "failure")
    assert breaker.state == "open"


def test_window_rate_threshold() -> None:
    breaker, _, events = window_breaker(min_calls=4, rate=0.5)
    for result in ("success", "success", "success", "failure", "success", "failure"):
        call(breaker, result)
    assert breaker.state == "closed"  # 2/6 = 33%
    call(breaker, "failure")  # 3/7 = 43%
    assert breaker.state == "closed"
    call(breaker, "failure")  # 4/8 = 50%: at the threshold
    assert breaker.state == "open"
    assert events == [BreakerOpened("up", 0.0, "4/8 calls failed in 10s")]


def test_window_success_never_trips() -> None:
    breaker, _, _ = window_breaker(min_calls=2, rate=0.5)
    call(breaker, "failure")
    call(breaker, "success")  # 1/2 = 50% but a success does not trip
    assert breaker.state == "closed"
    call(breaker, "failure")  # 2/3
    assert breaker.state == "open"


def test_old_calls_age_out_of_the_window() -> None:
    breaker, clock, _ = window_breaker(size=10.0, min_calls=4, rate=0.5)
    for _ in range(3):
        call(breaker, "failure")
    clock.advance(10.0)  # those three are now exactly at the horizon: out
    call(breaker, "failure")
    assert breaker.state == "closed"
    assert breaker.snapshot()["window_calls"] == 1
    clock.advance(5.0)
    for _ in range(3):
        call(breaker, "failure")
    assert breaker.state == "open"


def test_window_ignores_consecutive_count() -> None:
    breaker, _, _ = window_breaker(min_calls=100, rate=0.1)
    for _ in range(50):
        call(breaker, "failure")
    assert breaker.state == "closed"


# -- open ---------------------------------------------------------------------------------


def test_open_rejects_until_open_for() -> None:
    breaker, clock, _ = make()
    trip(breaker)
    for _ in range(3):
        assert breaker.acquire() is None
    assert breaker.rejections == 3
    clock.advance(9.999)
    assert breaker.acquire() is None
    assert breaker.rejections == 4
    assert breaker.retry_in() == pytest.approx(0.001)
    clock.advance(0.001)
    permit = breaker.acquire()
    assert permit is not None
    assert permit.probe
    assert breaker.state == "half_open"


def test_retry_in() -> None:
    breaker, clock, _ = make()
    assert breaker.retry_in() == 0.0  # closed
    trip(breaker)
    assert breaker.retry_in() == 10.0
    clock.advance(4.0)
    assert breaker.retry_in() == pytest.approx(6.0)
    clock.advance(6.0)
    assert breaker.retry_in() == 0.0  # asking moved it to half-open
    assert breaker.state == "half_open"


def test_open_to_half_open_when_state_is_read() -> None:
    breaker, clock, events = make()
    trip(breaker)
    clock.advance(10.0)
    assert breaker.state == "half_open"  # no call in between
    assert kinds(events) == ["BreakerOpened", "BreakerHalfOpened"]
    assert events[1] == BreakerHalfOpened("up", 10.0)
    assert breaker.state == "half_open"
    assert len(events) == 2  # asking again emits nothing


def test_open_to_half_open_on_acquire() -> None:
    breaker, clock, events = make()
    trip(breaker)
    clock.advance(30.0)
    assert breaker.acquire() is not None
    assert events[-1] == BreakerHalfOpened("up", 30.0)


def test_records_while_open_do_not_change_state() -> None:
    breaker, _, events = make()
    slow = breaker.acquire()  # a slow call that started while closed
    assert slow is not None
    trip(breaker)
    breaker.record(slow, "success")
    assert breaker.state == "open"
    breaker.record(slow, "failure")
    assert breaker.state == "open"
    assert kinds(events) == ["BreakerOpened"]


# -- half-open ------------------------------------------------------------------------------


def half_open(probes: int = 1) -> tuple[CircuitBreaker, FakeClock, list[BreakerEvent]]:
    breaker, clock, events = make(half_open_probes=probes)
    trip(breaker)
    clock.advance(10.0)
    assert breaker.state == "half_open"
    events.clear()
    return breaker, clock, events


@pytest.mark.parametrize("probes", [1, 2, 3])
def test_half_open_allows_exactly_the_probes(probes: int) -> None:
    breaker, _, _ = half_open(probes)
    permits = [breaker.acquire() for _ in range(probes)]
    assert all(permit is not None and permit.probe for permit in permits)
    assert breaker.snapshot()["probes_in_flight"] == probes
    rejections = breaker.rejections
    assert breaker.acquire() is None
    assert breaker.acquire() is None
    assert breaker.rejections == rejections + 2
    assert breaker.state == "half_open"


def test_probe_success_closes() -> None:
    breaker, clock, events = half_open(1)
    clock.advance(0.5)
    call(breaker, "success")
    assert breaker.state == "closed"
    assert events == [BreakerClosed("up", 10.5)]
    assert breaker.snapshot()["consecutive_failures"] == 0
    # A fresh count after closing.
    call(breaker, "failure")
    call(breaker, "failure")
    assert breaker.state == "closed"


def test_all_probes_must_succeed_to_close() -> None:
    breaker, _, events = half_open(3)
    permits = [breaker.acquire() for _ in range(3)]
    assert None not in permits
    breaker.record(permits[0], "success")  # type: ignore[arg-type]
    breaker.record(permits[1], "success")  # type: ignore[arg-type]
    assert breaker.state == "half_open"
    assert events == []
    breaker.record(permits[2], "success")  # type: ignore[arg-type]
    assert breaker.state == "closed"
    assert kinds(events) == ["BreakerClosed"]


def test_probe_failure_reopens_and_resets_the_timer() -> None:
    breaker, clock, events = half_open(1)
    clock.advance(2.0)  # t = 12
    call(breaker, "failure")
    assert breaker.state == "open"
    assert events == [BreakerOpened("up", 12.0, "a half-open probe failed")]
    assert breaker.retry_in() == 10.0
    clock.advance(9.0)  # t = 21: 11 s after the first opening, 9 after the second
    assert breaker.acquire() is None
    assert breaker.state == "open"
    clock.advance(1.0)
    assert breaker.state == "half_open"


def test_one_failed_probe_of_several_reopens() -> None:
    breaker, _, events = half_open(2)
    first, second = breaker.acquire(), breaker.acquire()
    assert first is not None
    assert second is not None
    breaker.record(first, "success")
    breaker.record(second, "failure")
    assert breaker.state == "open"
    assert kinds(events) == ["BreakerOpened"]


def test_ignored_probe_releases_its_slot_without_counting() -> None:
    breaker, _, events = half_open(1)
    permit = breaker.acquire()
    assert permit is not None
    assert breaker.acquire() is None
    counts = (breaker.failures, breaker.successes)
    breaker.record(permit, "ignored")  # client cancelled / 4xx
    assert breaker.state == "half_open"
    assert breaker.snapshot()["probes_in_flight"] == 0
    assert events == []
    assert (breaker.failures, breaker.successes) == counts
    again = breaker.acquire()
    assert again is not None
    assert again.probe
    breaker.record(again, "success")
    assert breaker.state == "closed"


def test_ignored_probe_does_not_count_towards_closing() -> None:
    breaker, _, _ = half_open(2)
    first, second = breaker.acquire(), breaker.acquire()
    breaker.record(first, "ignored")  # type: ignore[arg-type]
    breaker.record(second, "success")  # type: ignore[arg-type]
    assert breaker.state == "half_open"  # one success of two
    third = breaker.acquire()
    assert third is not None
    breaker.record(third, "success")
    assert breaker.state == "closed"


def test_stale_closed_permit_cannot_close_or_reopen_half_open() -> None:
    breaker, clock, events = make()
    slow_ok, slow_bad = breaker.acquire(), breaker.acquire()
    assert slow_ok is not None
    assert slow_bad is not None
    trip(breaker)
    clock.advance(10.0)
    assert breaker.state == "half_open"
    events.clear()
    breaker.record(slow_bad, "failure")
    assert breaker.state == "half_open"
    breaker.record(slow_ok, "success")
    assert breaker.state == "half_open"
    assert events == []
    assert breaker.failures == 4  # still counted in the totals
    assert breaker.successes == 1


def test_stale_probe_from_an_earlier_half_open_period_is_powerless() -> None:
    breaker, clock, events = half_open(1)
    old_probe = breaker.acquire()
    assert old_probe is not None
    breaker.force("open")
    clock.advance(10.0)
    assert breaker.state == "half_open"  # a new half-open period
    events.clear()
    breaker.record(old_probe, "success")
    assert breaker.state == "half_open"
    breaker.record(old_probe, "failure")
    assert breaker.state == "half_open"
    assert events == []
    # Its release did not free the current period's slot either.
    current = breaker.acquire()
    assert current is not None
    assert breaker.acquire() is None
    breaker.record(old_probe, "ignored")
    assert breaker.acquire() is None
    breaker.record(current, "success")
    assert breaker.state == "closed"


# -- operator overrides and disabled ---------------------------------------------------------


def test_force_open_and_closed() -> None:
    breaker, clock, events = make()
    call(breaker, "failure")
    call(breaker, "failure")
    clock.advance(1.0)
    breaker.force("open")
    assert breaker.state == "open"
    assert breaker.acquire() is None
    assert events == [BreakerOpened("up", 1.0, "forced open by an operator")]
    clock.advance(1.0)
    breaker.force("closed")
    assert breaker.state == "closed"
    assert events[-1] == BreakerClosed("up", 2.0)
    assert breaker.snapshot()["consecutive_failures"] == 0  # failures forgotten
    call(breaker, "failure")
    call(breaker, "failure")
    assert breaker.state == "closed"


def test_disabled_breaker_always_permits() -> None:
    breaker, _, events = make(enabled=False, consecutive_failures=1)
    for _ in range(20):
        call(breaker, "failure")
    assert breaker.state == "closed"
    assert breaker.rejections == 0
    assert events == []


# -- events -------------------------------------------------------------------------------


def test_a_full_cycle_emits_events_in_order() -> None:
    breaker, clock, events = make()
    trip(breaker)  # t = 0
    clock.advance(10.0)
    call(breaker, "failure")  # half-open at 10, probe fails: open at 10
    clock.advance(10.0)
    call(breaker, "success")  # half-open at 20, probe succeeds: closed at 20
    assert events == [
        BreakerOpened("up", 0.0, "3 consecutive failures"),
        BreakerHalfOpened("up", 10.0),
        BreakerOpened("up", 10.0, "a half-open probe failed"),
        BreakerHalfOpened("up", 20.0),
        BreakerClosed("up", 20.0),
    ]
    assert all(event.key == "up" for event in events)


def test_every_listener_gets_every_event() -> None:
    first: list[BreakerEvent] = []
    second: list[BreakerEvent] = []
    breaker = CircuitBreaker(
        "k", Breaker(consecutive_failures=1), FakeClock(), [first.append, second.append]
    )
    call(breaker, "failure")
    assert kinds(first) == kinds(second) == ["BreakerOpened"]


def test_no_listeners_is_fine() -> None:
    breaker = CircuitBreaker("k", Breaker(consecutive_failures=1), FakeClock())
    call(breaker, "failure")
    assert breaker.state == "open"


# -- snapshot -------------------------------------------------------------------------------


def test_snapshot_fields() -> None:
    breaker, clock, _ = make()
    assert breaker.snapshot() == {
        "key": "up",
        "state": "closed",
        "consecutive_failures": 0,
        "window_calls": 0,
        "failures": 0,
        "successes": 0,
        "rejections": 0,
        "half_open_in": None,
        "probes_in_flight": 0,
    }
    call(breaker, "success")
    trip(breaker)
    breaker.acquire()
    clock.advance(2.5)
    snap = breaker.snapshot()
    assert snap["state"] == "open"
    assert snap["half_open_in"] == 7.5
    assert (snap["failures"], snap["successes"], snap["rejections"]) == (3, 1, 1)
    assert snap["consecutive_failures"] == 3
    clock.advance(7.5)
    breaker.acquire()
    snap = breaker.snapshot()
    assert snap["state"] == "half_open"
    assert snap["half_open_in"] is None
    assert snap["probes_in_flight"] == 1


def test_state_values() -> None:
    assert STATE_VALUES == {"closed": 0, "half_open": 1, "open": 2}


# -- registry -------------------------------------------------------------------------------


def test_registry_keeps_state_across_get() -> None:
    clock = FakeClock(start=0.0)
    registry = BreakerRegistry(clock)
    events: list[BreakerEvent] = []
    registry.listeners.append(events.append)
    policy = Breaker(consecutive_failures=1, open_for=10.0)
    breaker = registry.get("route:up", policy)
    call(breaker, "failure")
    assert kinds(events) == ["BreakerOpened"]  # listeners added after creation still hear
    same = registry.get("route:up", Breaker(consecutive_failures=1, open_for=10.0))
    assert same is breaker
    assert same.state == "open"


def test_registry_reconfigure_keeps_state() -> None:
    clock = FakeClock(start=0.0)
    registry = BreakerRegistry(clock)
    breaker = registry.get("k", Breaker(consecutive_failures=1, open_for=10.0))
    call(breaker, "failure")
    longer = Breaker(consecutive_failures=1, open_for=60.0)
    again = registry.get("k", longer)
    assert again is breaker
    assert again.policy == longer
    assert again.state == "open"
    clock.advance(30.0)
    assert again.state == "open"  # the new open_for applies
    clock.advance(30.0)
    assert again.state == "half_open"


def test_registry_find_and_all_sorted() -> None:
    registry = BreakerRegistry(FakeClock())
    policy = Breaker()
    for key in ("b", "c", "a"):
        registry.get(key, policy)
    assert registry.find("a") is not None
    assert registry.find("a") is registry.get("a", policy)
    assert registry.find("zzz") is None
    assert [breaker.key for breaker in registry.all()] == ["a", "b", "c"]


# -- the probe lease: a lost probe's slot is freed after open_for ---------------------------


def test_a_lost_probe_slot_is_freed_after_open_for() -> None:
    breaker, clock, events = half_open(1)
    lost = breaker.acquire()  # its caller never records it (the bug a scope prevents)
    assert lost is not None
    clock.advance(9.999)
    assert breaker.acquire() is None
    clock.advance(0.001)  # open_for after the probe was granted
    probe = breaker.acquire()
    assert probe is not None
    assert probe.probe
    assert breaker.snapshot()["probes_in_flight"] == 1
    assert breaker.acquire() is None  # the new probe holds the one slot
    assert events == []  # still the same half-open period
    breaker.record(probe, "success")
    assert breaker.state == "closed"


def test_a_probe_reporting_after_its_slot_was_freed_frees_no_other_slot() -> None:
    breaker, clock, _ = half_open(1)
    late = breaker.acquire()
    assert late is not None
    clock.advance(10.0)
    current = breaker.acquire()
    assert current is not None
    breaker.record(late, "ignored")
    assert breaker.snapshot()["probes_in_flight"] == 1  # still the current probe's
    assert breaker.acquire() is None
    breaker.record(current, "ignored")
    assert breaker.snapshot()["probes_in_flight"] == 0


@pytest.mark.parametrize(("result", "state"), [("success", "closed"), ("failure", "open")])
def test_a_late_probe_of_the_same_half_open_period_still_decides(result: str, state: str) -> None:
    breaker, clock, _ = half_open(1)
    late = breaker.acquire()
    assert late is not None
    clock.advance(12.0)  # its slot is freed at the next acquire
    current = breaker.acquire()
    assert current is not None
    breaker.record(late, result)  # type: ignore[arg-type]
    assert breaker.state == state  # its answer is as good as any probe's of this period
    breaker.record(current, "success")  # the other probe, now stale: counted, powerless
    assert breaker.state == state


def test_probe_successes_before_a_lease_runs_out_still_count() -> None:
    breaker, clock, _ = half_open(2)
    first, lost = breaker.acquire(), breaker.acquire()
    assert first is not None
    assert lost is not None
    breaker.record(first, "success")
    clock.advance(10.0)
    again, other = breaker.acquire(), breaker.acquire()
    assert again is not None
    assert other is not None  # both slots free again: the lost one's too
    assert breaker.acquire() is None
    breaker.record(again, "success")  # 2 of 2 successes in this half-open period
    assert breaker.state == "closed"


def test_the_lease_runs_from_the_latest_probe_grant() -> None:
    breaker, clock, _ = half_open(2)
    assert breaker.acquire() is not None  # lost at t = 10
    clock.advance(6.0)
    assert breaker.acquire() is not None  # lost at t = 16: the lease now ends at 26
    clock.advance(9.0)
    assert breaker.acquire() is None  # t = 25: the older probe is not freed alone
    clock.advance(1.0)
    assert breaker.acquire() is not None
