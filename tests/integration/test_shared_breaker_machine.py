"""The shared breaker's scripts on a real Redis: the probe lease, and a state machine.

The machine takes random steps (acquire, a closed-state result, a probe's result, lose a
probe or have it report long after its lease, the local window's trip, an operator's
open / close, time passing, a read) and checks every script reply against a model of the
hash: state, failures, probes in flight, generation, time left open; rejections happen
only within ``open_for`` of an opening or a probe grant (never stuck), and the state
moves only as each script may. Derandomized and bounded (200 runs, ~2 s);
HYPOTHESIS_PROFILE=deep runs it longer and randomized.

Redis's clock (``TIME``) cannot be faked, and sleeping through ``open_for`` would make
the tests slow and racy. The scripts read the time only to compare it with two fields of
the hash, ``u`` (open until) and ``l`` (the probe lease's end), so moving both back by
*s* seconds is exactly what *s* seconds passing would do: ``later()`` does that. The
real time a test takes (milliseconds) stays far below the margins the checks allow.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import Any

import redis
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule, run_state_machine_as_test

from sidecar.policy.model import Breaker, Secret, StateBackend
from sidecar.resilience.breaker import State
from sidecar.resilience.clock import SystemClock
from sidecar.shared.breakers import Op, SharedBreakers, SharedState
from sidecar.shared.redis import SharedStore

STATES: list[State] = ["closed", "open", "half_open"]
RESULTS = st.sampled_from(["success", "failure", "ignored"])


def later(client: redis.Redis, name: str, seconds: float) -> None:
    """Move the breaker hash *name* *seconds* into the future (its deadlines back)."""
    if client.exists(name):
        for field in ("u", "l"):
            client.hincrbyfloat(name, field, -seconds)


def stores(redis_url: str, prefix: str) -> tuple[SharedStore, SharedBreakers]:
    clock = SystemClock()
    store = SharedStore(StateBackend("redis", Secret(redis_url), prefix, 1.0), clock)
    return store, SharedBreakers(clock)


async def test_a_probe_reporting_after_its_lease_frees_no_newer_probes_slot(
    redis_url: str, redis_prefix: str
) -> None:
    store, views = stores(redis_url, redis_prefix)
    client = redis.Redis.from_url(redis_url)
    name = store.key("breaker", "k")
    rule = Breaker(consecutive_failures=1, open_for=30.0, half_open_probes=1)
    try:
        await views.record(store, "k", rule, "failure")
        later(client, name, 30.0)
        late, extra = await views.acquire(store, "k", rule)
        assert late is not None
        assert extra == 2  # a probe; its replica is slow, not dead
        later(client, name, 30.0)
        current, extra = await views.acquire(store, "k", rule)
        assert current is not None
        assert extra == 2  # the lease ran out: the slot is the new probe's
        after, _ = await views.probe_done(store, "k", rule, late.generation, "ignored")
        assert after is not None
        assert after.probes == 1  # the late probe did not free the new one's slot
        assert (await views.acquire(store, "k", rule))[1] == 0  # one probe in flight at most
        closed, _ = await views.probe_done(store, "k", rule, current.generation, "success")
        assert closed is not None
        assert closed.state == "closed"
    finally:
        client.close()
        await store.close()


# -- the state machine -------------------------------------------------------------------

TICK = 10.0  # seconds of Redis time per step of the model's clock
OPEN_FOR = 10.5 * TICK  # deadlines fall between ticks: a run's real milliseconds never tip one
DEEP = os.environ.get("HYPOTHESIS_PROFILE") == "deep"
# What each script may do to the state (from, to); the model predicts which exactly.
MOVES: dict[str, set[tuple[State, State]]] = {
    "acquire": {("closed", "closed"), ("open", "open"), ("open", "half_open")}
    | {("half_open", "half_open")},
    "failure": {("closed", "open")} | {(state, state) for state in STATES},
    "success": {(state, state) for state in STATES},
    "trip": {("closed", "open")} | {(state, state) for state in STATES},
    "probe": {("half_open", "open"), ("half_open", "closed")}
    | {(state, state) for state in STATES},
    "open": {(state, "open") for state in STATES},
    "close": {(state, "closed") for state in STATES},
    "read": {(state, state) for state in STATES},
}


@dataclass(frozen=True)
class Shared:
    """What every run of the machine shares: its event loop, the store, a plain client."""

    run: Callable[[Coroutine[Any, Any, Any]], Any]
    store: SharedStore
    views: SharedBreakers
    client: redis.Redis
    keys: Iterator[int]


@dataclass(frozen=True)
class Probe:
    token: int  # the generation it was granted in
    at: int


class SharedBreakerMachine(RuleBasedStateMachine):
    """The scripts against a model of the hash: s, f, p, w, g, h and the two deadlines."""

    def __init__(self, shared: Shared) -> None:
        super().__init__()
        self.shared = shared
        self.key = f"machine-{next(shared.keys)}"
        self.name = shared.store.key("breaker", self.key)
        self.now = 0  # ticks
        self.state: State = "closed"
        self.seen: State = "closed"  # as the last reply said
        self.f = self.p = self.w = self.g = self.h = 0
        self.opened_at = 0
        self.lease_end = 0.0
        self.normal = 0  # closed-state attempts in flight
        self.probes: list[Probe] = []  # will report
        self.lost: list[Probe] = []  # never will, or long after their lease

    @initialize(
        threshold=st.integers(1, 3), probes=st.integers(1, 3), begin=st.sampled_from(STATES)
    )
    def start(self, threshold: int, probes: int, begin: State) -> None:
        """A breaker with these settings, brought to *begin* (half-open: one probe out)."""
        self.policy = Breaker(
            consecutive_failures=threshold, open_for=OPEN_FOR, half_open_probes=probes
        )
        if begin != "closed":
            self.command("open")
        if begin == "half_open":
            self.advance_to_deadline(0, past=True)
            self.acquire()

    # -- the model ----------------------------------------------------------------------

    def enter(self, state: State) -> None:
        self.state, self.p, self.w, self.g = state, 0, 0, self.g + 1
        self.h = self.g
        if state == "open":
            self.opened_at = self.now

    def check(self, op: str, reply: tuple[SharedState | None, int], extra: int) -> None:
        """The script's reply is the model's state, reached by a move *op* may make."""
        view, got = reply
        assert view is not None, "Redis did not answer"
        assert (self.seen, view.state) in MOVES[op]
        self.seen = view.state
        assert got == extra
        assert (view.state, view.failures, view.probes) == (self.state, self.f, self.p)
        assert view.generation == self.g
        if view.state == "open":
            waited = (self.opened_at + OPEN_FOR / TICK - self.now) * TICK
            assert abs(view.retry_in - max(0.0, waited)) < TICK / 2
        assert 0 <= view.probes <= self.policy.half_open_probes

    def probe_done(self, probe: Probe, result: str) -> None:
        reply = self.shared.run(
            self.shared.views.probe_done(
                self.shared.store, self.key, self.policy, probe.token, result
            )
        )
        extra = 0
        if self.state == "half_open" and self.h <= probe.token <= self.g:
            if probe.token < self.g:
                event("a probe reported after its lease ran out")
            if probe.token == self.g:
                self.p -= 1
            if result == "failure":
                self.enter("open")
                extra = 1
            elif result == "success":
                self.w += 1
                if self.w >= self.policy.half_open_probes:
                    self.enter("closed")
                    self.f = 0
        self.check("probe", reply, extra)

    # -- rules --------------------------------------------------------------------------

    @rule()
    def acquire(self) -> None:
        shared = self.shared
        reply = shared.run(shared.views.acquire(shared.store, self.key, self.policy))
        extra = 1 if self.state == "closed" else 0
        if self.state == "open" and self.now >= self.opened_at + OPEN_FOR / TICK:
            self.enter("half_open")
        if self.state == "half_open":
            if self.p and self.now >= self.lease_end:
                self.p, self.g = 0, self.g + 1
                event("a probe lease ran out")
            if self.p < self.policy.half_open_probes:
                self.p += 1
                self.lease_end = self.now + OPEN_FOR / TICK
                self.probes.append(Probe(self.g, self.now))
                extra = 2
        if extra == 0:  # never stuck: rejected only within open_for of an opening or a grant
            assert (self.state == "open" and self.now < self.opened_at + OPEN_FOR / TICK) or (
                self.state == "half_open" and self.now < self.lease_end
            )
        self.normal += extra == 1
        self.check("acquire", reply, extra)

    @rule(result=st.sampled_from(["success", "failure"]))
    def record(self, result: Op) -> None:
        """A closed-state attempt's result (an ignored one never reaches Redis)."""
        if not self.normal:
            return
        self.normal -= 1
        self.script(result)

    @rule(op=st.sampled_from(["trip", "open", "close"]))
    def command(self, op: Op) -> None:
        """The local window breaker tripped (trip), or an operator's open / close."""
        self.script(op)

    def script(self, op: Op) -> None:
        shared = self.shared
        reply = shared.run(shared.views.record(shared.store, self.key, self.policy, op))
        extra = 0
        if op == "open" or (op == "trip" and self.state == "closed"):
            self.enter("open")
            extra = 1
        elif op == "close":
            self.enter("closed")
            self.f = 0
        elif self.state == "closed":
            self.f = self.f + 1 if op == "failure" else 0
            if self.f >= (self.policy.consecutive_failures or 1):
                self.enter("open")
                extra = 1
        self.check(op, reply, extra)

    @rule(index=st.integers(0, 20), result=RESULTS, lost=st.booleans())
    def report(self, index: int, result: str, lost: bool) -> None:
        """A probe's result; *lost*: one presumed lost reports after all (outlived its lease)."""
        held = self.lost if lost else self.probes
        if held:
            self.probe_done(held.pop(index % len(held)), result)

    @rule(index=st.integers(0, 20))
    def lose(self, index: int) -> None:
        if self.probes:
            self.lost.append(self.probes.pop(index % len(self.probes)))

    @rule(ticks=st.sampled_from([1, 9, 10, 11, 25]))
    def advance(self, ticks: int) -> None:
        later(self.shared.client, self.name, ticks * TICK)
        self.now += ticks

    @rule(which=st.integers(0, 5), past=st.booleans())
    def advance_to_deadline(self, which: int, past: bool) -> None:
        """To just before, or just after, open_for from the opening or a probe grant."""
        times = sorted({self.opened_at, *(probe.at for probe in self.probes + self.lost)})
        wait = times[which % len(times)] + int(OPEN_FOR / TICK) + past - self.now
        if wait > 0:
            self.advance(wait)

    @rule()
    def read(self) -> None:
        shared = self.shared
        reply = shared.run(shared.views.current(shared.store, self.key, force=True))
        self.check("read", (reply, 0), 0)


def test_the_shared_breaker_as_a_state_machine(redis_url: str, redis_prefix: str) -> None:
    store, views = stores(redis_url, redis_prefix)
    client = redis.Redis.from_url(redis_url)
    with asyncio.Runner() as runner:
        shared = Shared(runner.run, store, views, client, itertools.count())
        try:
            run_state_machine_as_test(
                lambda: SharedBreakerMachine(shared),
                settings=settings(
                    max_examples=1000 if DEEP else 200,
                    stateful_step_count=30,
                    derandomize=not DEEP,
                    database=None,
                    deadline=None,
                    suppress_health_check=[HealthCheck.too_slow],
                ),
            )
        finally:
            client.close()
            runner.run(store.close())
