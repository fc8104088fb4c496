"""The local circuit breaker as a hypothesis state machine, against a model of its table.

Random steps: acquire, record a permit (success / failure / ignored), lose a permit
(its caller never records it: the bug the request scopes prevent and the probe lease
backs up) or have it report long after all, read the state, force it open, advance
the fake clock (by steps, or to just around the next deadline); both trip
conditions, 1-3 probes; each run starts closed, open or half-open.

The model predicts every answer and event exactly: what ``acquire()`` returns, which
transition (if any) each step makes, the probe slots in flight (a lost probe holds
its slot until the lease, ``open_for`` after the latest probe grant, runs out), and
the counts. On top of that it checks the invariants in plain words: a rejection
happens only within ``open_for`` of an opening or of the latest probe grant (never
stuck), the probe slots stay within ``0..half_open.probes``, failures + successes
equal the results recorded, and events follow only the table's transitions.

Settings are fixed (derandomized, bounded) like tests/fuzz's profile, so the run is
the same everywhere and takes a few seconds; HYPOTHESIS_PROFILE=deep runs it longer
and randomized. ``--hypothesis-show-statistics`` shows how often a lease ran out.
"""

from __future__ import annotations

import os
from collections import deque
from dataclasses import dataclass

from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from sidecar.policy.model import Breaker, Window
from sidecar.resilience.breaker import (
    BreakerClosed,
    BreakerEvent,
    BreakerHalfOpened,
    BreakerOpened,
    CircuitBreaker,
    Permit,
    Result,
    State,
)
from sidecar.resilience.clock import FakeClock

OPEN_FOR = 10.0
STATES: list[State] = ["closed", "open", "half_open"]
RESULTS = st.sampled_from(["success", "failure", "ignored"])
DEEP = os.environ.get("HYPOTHESIS_PROFILE") == "deep"
# (from, event) -> to: the transitions of the state table, nothing else.
TRANSITIONS: dict[tuple[State, type[BreakerEvent]], State] = {
    ("closed", BreakerOpened): "open",
    ("half_open", BreakerOpened): "open",
    ("open", BreakerHalfOpened): "half_open",
    ("half_open", BreakerClosed): "closed",
}

consecutive = st.builds(
    Breaker,
    consecutive_failures=st.integers(1, 3),
    open_for=st.just(OPEN_FOR),
    half_open_probes=st.integers(1, 3),
)
windowed = st.builds(
    Breaker,
    consecutive_failures=st.none(),
    window=st.builds(
        Window,
        size=st.sampled_from([5.0, 20.0]),
        min_calls=st.integers(2, 4),
        failure_rate=st.sampled_from([0.5, 1.0]),
    ),
    open_for=st.just(OPEN_FOR),
    half_open_probes=st.integers(1, 3),
)


@dataclass(frozen=True)
class Held:
    """A permit the model has handed out: when, in which state period and probe lease."""

    permit: Permit
    at: float
    period: int
    lease: int


class LocalBreakerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock(start=0.0)
        self.events: list[BreakerEvent] = []
        self.outstanding: list[Held] = []  # will be recorded
        self.lost: list[Held] = []  # never will
        self.state: State = "closed"
        self.period = 0  # +1 at every transition
        self.lease = 0  # +1 at every transition and every lease that runs out
        self.slots = 0  # probe slots held in the current lease
        self.probe_successes = 0
        self.opened_at = 0.0
        self.last_grant = 0.0
        self.consecutive = 0
        self.window: deque[tuple[float, bool]] = deque()
        self.failures = self.successes = self.rejections = 0

    @initialize(policy=st.one_of(consecutive, windowed), begin=st.sampled_from(STATES))
    def start(self, policy: Breaker, begin: State) -> None:
        """A breaker with *policy*, brought to *begin* the way an operator could."""
        self.policy = policy
        self.breaker = CircuitBreaker("up", policy, self.clock, [self.events.append])
        if begin != "closed":
            self.force_open()
        if begin == "half_open":
            self.advance(OPEN_FOR)
            self.read_state()

    # -- the model ----------------------------------------------------------------------

    def ask(self) -> BreakerEvent | None:
        """What asking (acquire, state) does first: half-open when due, free lost slots."""
        now = self.clock.now()
        if self.state == "open" and now >= self.opened_at + OPEN_FOR:
            return BreakerHalfOpened("up", now)
        if self.state == "half_open" and self.slots and now >= self.last_grant + OPEN_FOR:
            self.lease += 1
            self.slots = 0
            event("lease ran out")
        return None

    def expect(self, expected: BreakerEvent | None) -> None:
        """The events since the last step are exactly *expected*; follow its transition."""
        events, self.events[:] = list(self.events), []
        assert events == ([] if expected is None else [expected])
        if expected is not None:
            assert (self.state, type(expected)) in TRANSITIONS, "not a transition of the table"
            self.state = TRANSITIONS[(self.state, type(expected))]
            self.period += 1
            self.lease += 1
            self.slots = 0
            self.probe_successes = 0
            if isinstance(expected, BreakerOpened):
                self.opened_at = expected.at
            if isinstance(expected, BreakerClosed):
                self.consecutive = 0
                self.window.clear()

    def trip(self, failed: bool) -> BreakerOpened | None:
        """A closed-state result: the trip condition, as the policy states it."""
        now = self.clock.now()
        self.consecutive = self.consecutive + 1 if failed else 0
        window = self.policy.window
        if window is not None:
            self.window.append((now, failed))
            while self.window and self.window[0][0] <= now - window.size:
                self.window.popleft()
            calls, bad = len(self.window), sum(bad_call for _, bad_call in self.window)
            if failed and calls >= window.min_calls and bad / calls >= window.failure_rate:
                return BreakerOpened("up", now, f"{bad}/{calls} calls failed in {window.size:g}s")
            return None
        threshold = self.policy.consecutive_failures
        if failed and threshold is not None and self.consecutive >= threshold:
            return BreakerOpened("up", now, f"{self.consecutive} consecutive failures")
        return None

    def check_snapshot(self) -> None:
        snapshot = self.breaker.snapshot()  # asks too: at the same time, a no-op now
        assert snapshot["state"] == self.state
        assert snapshot["probes_in_flight"] == self.slots
        assert snapshot["consecutive_failures"] == self.consecutive

    # -- rules --------------------------------------------------------------------------

    @rule()
    def acquire(self) -> None:
        due = self.ask()
        permit = self.breaker.acquire()
        self.expect(due)
        now = self.clock.now()
        if permit is None:
            self.rejections += 1
            # Never stuck: a rejection only within open_for of an opening or a probe grant.
            assert (self.state == "open" and now < self.opened_at + OPEN_FOR) or (
                self.state == "half_open" and now < self.last_grant + OPEN_FOR
            )
            assert self.state == "open" or self.slots == self.policy.half_open_probes
        else:
            assert self.state != "open"
            assert permit.probe == (self.state == "half_open")
            if permit.probe:
                assert self.slots < self.policy.half_open_probes
                self.slots += 1
                self.last_grant = now
            self.outstanding.append(Held(permit, now, self.period, self.lease))
        self.check_snapshot()

    def pick(self, index: int, probes_only: bool) -> Held | None:
        """One outstanding permit (a probe's, when asked and there is one), taken out."""
        probes = [held for held in self.outstanding if held.permit.probe]
        pool = probes if probes_only and probes else self.outstanding
        if not pool:
            return None
        held = pool[index % len(pool)]
        self.outstanding.remove(held)
        return held

    @rule(index=st.integers(0, 50), result=RESULTS, probes_only=st.booleans())
    def record(self, index: int, result: Result, probes_only: bool) -> None:
        held = self.pick(index, probes_only)
        if held is not None:
            self.settle(held, result)

    @rule(index=st.integers(0, 50), result=RESULTS)
    def record_lost(self, index: int, result: Result) -> None:
        """A permit presumed lost reports after all (a probe that outlived its lease)."""
        if self.lost:
            self.settle(self.lost.pop(index % len(self.lost)), result)

    def settle(self, held: Held, result: Result) -> None:
        self.breaker.record(held.permit, result)
        if result != "ignored":
            self.failures += result == "failure"
            self.successes += result == "success"
        if held.permit.probe and held.lease == self.lease:
            self.slots -= 1
        if held.permit.probe and held.lease != self.lease and held.period == self.period:
            event("a probe reported after its lease ran out")
        expected: BreakerEvent | None = None
        if result == "ignored":
            pass
        elif held.permit.probe:
            if held.period == self.period and self.state == "half_open":
                if result == "failure":
                    expected = BreakerOpened("up", self.clock.now(), "a half-open probe failed")
                else:
                    self.probe_successes += 1
                    if self.probe_successes >= self.policy.half_open_probes:
                        expected = BreakerClosed("up", self.clock.now())
        elif self.state == "closed":
            expected = self.trip(result == "failure")
        self.expect(expected)

    @rule(index=st.integers(0, 50))
    def lose(self, index: int) -> None:
        held = self.pick(index, probes_only=True)
        if held is not None:
            self.lost.append(held)

    @rule()
    @precondition(lambda self: self.state != "open")
    def force_open(self) -> None:
        self.breaker.force("open")  # an operator's drill: the short way to half-open
        self.expect(BreakerOpened("up", self.clock.now(), "forced open by an operator"))

    @rule(seconds=st.sampled_from([1.0, 9.0, 10.0, 11.0, 25.0]))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @rule(which=st.integers(0, 5), offset=st.sampled_from([0.0, -1.0, 1.0]))
    def advance_to_deadline(self, which: int, offset: float) -> None:
        """To a time that matters (open_for after the opening or a probe grant), or near it."""
        grants = [held.at for held in self.outstanding + self.lost if held.permit.probe]
        times = sorted({self.opened_at, *grants}, reverse=True)
        wait = times[which % len(times)] + OPEN_FOR + offset - self.clock.now()
        if wait > 0:
            self.clock.advance(wait)

    @rule()
    def read_state(self) -> None:
        due = self.ask()
        state = self.breaker.state
        self.expect(due)
        assert state == self.state
        self.check_snapshot()

    # -- invariants ---------------------------------------------------------------------

    @invariant(check_during_init=False)
    def counts_add_up(self) -> None:
        assert self.events == []  # every event was expected by the step that caused it
        assert (self.breaker.failures, self.breaker.successes) == (self.failures, self.successes)
        assert self.breaker.rejections == self.rejections
        assert 0 <= self.slots <= self.policy.half_open_probes
        # Read without asking (snapshot() asks, which would free lapsed slots at every step).
        assert self.breaker._probes_in_flight == self.slots


LocalBreakerMachine.TestCase.settings = settings(
    max_examples=2000 if DEEP else 300,
    stateful_step_count=50,
    derandomize=not DEEP,
    database=None,
    deadline=None,
)
TestLocalBreaker = LocalBreakerMachine.TestCase
