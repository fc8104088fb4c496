"""Circuit breaker: a state machine with no I/O, driven by an injected clock.

Theory of operation
-------------------
A caller asks ``acquire()`` before an attempt. The answer is a ``Permit`` or
``None`` (rejected: no upstream call). After the attempt the caller reports
the permit's result with ``record(permit, result)``; ``"ignored"`` (client
cancelled, 4xx) releases a probe slot without counting as success or failure.

    state      event                                  next       emits
    ---------  -------------------------------------  ---------  ----------------
    closed     failure; trip condition met            open       BreakerOpened
    closed     success / failure below threshold      closed     -
    open       acquire() before open_for elapsed      open       - (rejected)
    open       acquire() after open_for elapsed       half_open  BreakerHalfOpened
    half_open  acquire() with a free probe slot       half_open  - (permit)
    half_open  acquire() with all probes in flight    half_open  - (rejected)
    half_open  acquire(); the probe lease ran out     half_open  - (slots freed)
    half_open  probe success; all probes succeeded    closed     BreakerClosed
    half_open  probe failure                          open       BreakerOpened

The trip condition is either N consecutive failures, or a failure rate over a
sliding time window with at least ``min_calls`` calls in it. The open → half-open
move happens when somebody asks (``acquire()`` or ``state``), not only after a
call, so a quiet breaker still recovers. A permit issued in an earlier state
(a slow call that started while closed) is recorded for the window but cannot
close or re-open a half-open breaker: only probes decide that.

The probe lease is the backstop for a probe that is never recorded (a caller
lost its permit): it ends ``open_for`` after the latest probe grant, like the
shared breaker's (``l`` in its Redis hash). When somebody asks after it ended
with probes in flight, those probes are presumed lost and their slots freed.
Every permit carries the generation that issued it; the generation goes up at
every state change *and* at every lease that runs out, and ``_period`` is the
generation the current state began with. So for a probe's ``record()``:

    permit.generation      its slot          its result
    ---------------------  ----------------  ----------------------------------
    == generation          released          decides (success / failure)
    in [period, gen)       freed already     decides: same half-open period
    < period               -                 counted in the totals only

A probe outliving its lease (a long stream) still decides when it reports, so
a route whose probes take longer than ``open_for`` still closes; it just never
frees a slot it no longer holds, so ``half_open.probes`` bounds the probes in
flight whose lease holds.

With a shared state backend the decisions are made by the shared breaker
(``sidecar/shared/breakers.py``) and this one *follows* them: ``follow(state)``
mirrors the shared state (emitting the same events, so logs, metrics and the
admin API show it on every replica) and ``count(result)`` keeps its counts.
When the backend is unavailable it decides alone again, from where it was.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Literal

from sidecar.policy.model import Breaker as BreakerPolicy
from sidecar.resilience.clock import Clock
from sidecar.resilience.lru import BoundedLRU

State = Literal["closed", "open", "half_open"]
Result = Literal["success", "failure", "ignored"]
STATE_VALUES: dict[State, int] = {"closed": 0, "half_open": 1, "open": 2}
MAX_BREAKERS: Final = 1024  # breakers kept (per-model keys are client-chosen)


@dataclass(frozen=True, slots=True)
class BreakerOpened:
    key: str
    at: float
    reason: str


@dataclass(frozen=True, slots=True)
class BreakerHalfOpened:
    key: str
    at: float


@dataclass(frozen=True, slots=True)
class BreakerClosed:
    key: str
    at: float


BreakerEvent = BreakerOpened | BreakerHalfOpened | BreakerClosed


@dataclass(frozen=True, slots=True)
class Permit:
    generation: int  # which state period issued it
    probe: bool


class CircuitBreaker:
    def __init__(
        self,
        key: str,
        policy: BreakerPolicy,
        clock: Clock,
        listeners: list[Callable[[BreakerEvent], None]] | None = None,
    ) -> None:
        self.key = key
        self.policy = policy
        self._clock = clock
        self._listeners = listeners if listeners is not None else []
        self._state: State = "closed"
        self._generation = 0
        self._period = 0  # the generation the current state began with
        self._opened_at = 0.0
        self._lease_until = 0.0  # half-open: probes in flight are presumed lost from then
        self._consecutive = 0
        self._calls: deque[tuple[float, bool]] = deque()  # (time, failed) inside the window
        self._probes_in_flight = 0
        self._probe_successes = 0
        self.failures = 0
        self.successes = 0
        self.rejections = 0

    # -- queries -------------------------------------------------------------------------

    @property
    def state(self) -> State:
        self._maybe_half_open()
        return self._state

    def retry_in(self) -> float:
        """Seconds until an open breaker lets a probe through (0 when not open)."""
        if self.state != "open":
            return 0.0
        return max(0.0, self._opened_at + self.policy.open_for - self._clock.now())

    def snapshot(self) -> dict[str, object]:
        state = self.state
        return {
            "key": self.key,
            "state": state,
            "consecutive_failures": self._consecutive,
            "window_calls": len(self._calls),
            "failures": self.failures,
            "successes": self.successes,
            "rejections": self.rejections,
            "half_open_in": round(self.retry_in(), 3) if state == "open" else None,
            "probes_in_flight": self._probes_in_flight,
        }

    # -- transitions -------------------------------------------------------------------

    def reconfigure(self, policy: BreakerPolicy) -> None:
        """New settings after a policy reload; state and counts carry over."""
        self.policy = policy

    def acquire(self) -> Permit | None:
        """A permit for one attempt, or None when the breaker rejects it."""
        if not self.policy.enabled:
            return Permit(self._generation, probe=False)
        self._maybe_half_open()
        if self._state == "closed":
            return Permit(self._generation, probe=False)
        if self._state == "half_open" and self._probes_in_flight < self.policy.half_open_probes:
            self._probes_in_flight += 1
            self._lease_until = self._clock.now() + self.policy.open_for
            return Permit(self._generation, probe=True)
        self.rejections += 1
        return None

    def record(self, permit: Permit, result: Result) -> None:
        """Report the outcome of the attempt *permit* allowed."""
        if permit.probe and permit.generation == self._generation:
            self._probes_in_flight = max(0, self._probes_in_flight - 1)
        if result == "ignored" or not self.policy.enabled:
            return
        failed = result == "failure"
        if failed:
            self.failures += 1
        else:
            self.successes += 1
        now = self._clock.now()
        if permit.probe:
            if permit.generation < self._period or self._state != "half_open":
                return
            if failed:
                self._open(now, "a half-open probe failed")
            else:
                self._probe_successes += 1
                if self._probe_successes >= self.policy.half_open_probes:
                    self._close(now)
            return
        if self._state != "closed":
            return  # a call that started before the breaker opened
        self._consecutive = self._consecutive + 1 if failed else 0
        window = self.policy.window
        if window is not None:
            self._calls.append((now, failed))
            self._trim(now)
            calls = len(self._calls)
            failures = sum(1 for _, bad in self._calls if bad)
            if failed and calls >= window.min_calls and failures / calls >= window.failure_rate:
                self._open(now, f"{failures}/{calls} calls failed in {window.size:g}s")
        elif failed and self._consecutive >= (self.policy.consecutive_failures or 1):
            self._open(now, f"{self._consecutive} consecutive failures")

    def follow(self, state: State, retry_in: float = 0.0, reason: str = "shared state") -> None:
        """Mirror a state decided elsewhere (the shared breaker); events fire on a change.

        *retry_in*: seconds until an open breaker lets probes through; an open breaker
        whose time is up counts as half-open (the shared one moves when asked).
        """
        now = self._clock.now()
        current = self.state
        if state == "open" and retry_in <= 0:
            state = "half_open"
        if state == "open":
            if current != "open":
                self._enter("open")
                self._emit(BreakerOpened(self.key, now, reason))
            self._opened_at = now + retry_in - self.policy.open_for
        elif state == "half_open" and current != "half_open":
            self._enter("half_open")
            self._opened_at = now - self.policy.open_for
            self._emit(BreakerHalfOpened(self.key, now))
        elif state == "closed" and current != "closed":
            self._close(now)

    def count(self, result: Result | Literal["rejected"]) -> None:
        """Count an attempt the shared breaker decided (no local transition)."""
        if result == "failure":
            self.failures += 1
        elif result == "success":
            self.successes += 1
        elif result == "rejected":
            self.rejections += 1

    def force(self, state: Literal["open", "closed"]) -> None:
        """Operator override (drills): open now, or close and forget the failures."""
        now = self._clock.now()
        if state == "open":
            self._open(now, "forced open by an operator")
        else:
            self._close(now)

    # -- internals ---------------------------------------------------------------------

    def _maybe_half_open(self) -> None:
        now = self._clock.now()
        if self._state == "open" and now >= self._opened_at + self.policy.open_for:
            self._enter("half_open")
            self._emit(BreakerHalfOpened(self.key, now))
        elif self._state == "half_open" and self._probes_in_flight and now >= self._lease_until:
            self._generation += 1  # the lost probes' slots: freed, their results still decide
            self._probes_in_flight = 0

    def _open(self, now: float, reason: str) -> None:
        self._enter("open")
        self._opened_at = now
        self._emit(BreakerOpened(self.key, now, reason))

    def _close(self, now: float) -> None:
        self._enter("closed")
        self._consecutive = 0
        self._calls.clear()
        self._emit(BreakerClosed(self.key, now))

    def _enter(self, state: State) -> None:
        self._state = state
        self._generation += 1
        self._period = self._generation
        self._probes_in_flight = 0
        self._probe_successes = 0

    def _trim(self, now: float) -> None:
        assert self.policy.window is not None
        horizon = now - self.policy.window.size
        while self._calls and self._calls[0][0] <= horizon:
            self._calls.popleft()

    def _emit(self, event: BreakerEvent) -> None:
        for listener in self._listeners:
            listener(event)


class BreakerRegistry:
    """Breakers by stable key; they outlive policy reloads (state carries over by name).

    Keys may hold a client's model name (``breaker.key: upstream_model``), so the
    registry keeps at most ``capacity`` breakers: past it, the least recently used
    *closed* breaker goes (an open or half-open one is kept while a closed one is
    among the ``SCAN`` oldest; see ``sidecar/resilience/lru.py``).
    """

    def __init__(self, clock: Clock, capacity: int = MAX_BREAKERS) -> None:
        self._clock = clock
        self._breakers: BoundedLRU[str, CircuitBreaker] = BoundedLRU(capacity, _matters)
        self.listeners: list[Callable[[BreakerEvent], None]] = []

    def get(self, key: str, policy: BreakerPolicy) -> CircuitBreaker:
        breaker = self._breakers.get(key)
        if breaker is None:
            breaker = CircuitBreaker(key, policy, self._clock, self.listeners)
            self._breakers.put(key, breaker)
        elif breaker.policy is not policy:  # a reload compiled new (maybe equal) settings
            breaker.reconfigure(policy)
        return breaker

    def find(self, key: str) -> CircuitBreaker | None:
        return self._breakers.peek(key)

    def all(self) -> list[CircuitBreaker]:
        return sorted(self._breakers.values(), key=lambda breaker: breaker.key)

    def __len__(self) -> int:
        return len(self._breakers)


def _matters(breaker: CircuitBreaker) -> bool:
    """An open or half-open breaker holds state a fresh one would not have."""
    return breaker.state != "closed"
