"""Hedging: the race between a slow target and the next one, on a fake clock."""

from __future__ import annotations

import asyncio

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from sidecar.observability.metrics import Metrics
from sidecar.pipeline.call import Answer, Call, Handler, TargetFailed
from sidecar.pipeline.hedge import HedgeFailed, Hedging, should_hedge
from sidecar.policy.model import Budget, Match, Route, Upstream
from sidecar.resilience.budget import RetryBudget
from sidecar.resilience.clock import FakeClock
from sidecar.resilience.deadline import Deadline

ROUTE = Route("chat", Match("/v1/chat/completions"), ())


class Slow:
    """A target that answers (or gives up) only when told; records a cancellation."""

    def __init__(self, name: str) -> None:
        self.upstream = Upstream(name, f"http://{name}", "openai")
        self.release: asyncio.Future[Answer | TargetFailed] | None = None
        self.started = asyncio.Event()
        self.cancelled = False

    async def __call__(self, call: Call) -> Answer:
        call.attempts += 1
        self.release = asyncio.get_running_loop().create_future()
        self.started.set()
        try:
            outcome = await self.release
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        if isinstance(outcome, TargetFailed):
            raise outcome
        return outcome

    def answer(self) -> Answer:
        answer = Answer(200, CIMultiDict(), self.upstream)
        assert self.release is not None
        self.release.set_result(answer)
        return answer

    def fail(self) -> None:
        assert self.release is not None
        self.release.set_result(TargetFailed("attempts_exhausted"))


GENEROUS = Budget(1.0, 100.0)


def make(clock: FakeClock, budget: Budget = GENEROUS) -> tuple[Hedging, Metrics, Call]:
    metrics = Metrics()
    call = Call(
        "req-1", "POST", "/v1/chat/completions", CIMultiDictProxy(CIMultiDict()), "openai",
        ROUTE, b"{}", {}, "gpt-4o", False, deadline=Deadline.start(clock, 60.0),
    )  # fmt: skip
    return Hedging(2.0, clock, RetryBudget(budget, clock), metrics), metrics, call


def hedges(metrics: Metrics, result: str) -> float:
    return metrics.hedges.labels("chat", "a", "b", result)._value.get()


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_quick_answer_sends_no_hedge() -> None:
    clock = FakeClock(autoadvance=False)
    hedging, metrics, call = make(clock)
    a, b = Slow("a"), Slow("b")
    race = asyncio.create_task(hedging.race(call, ("a", a), ("b", b)))
    await a.started.wait()
    clock.advance(1.9)
    expected = a.answer()
    assert await race is expected
    assert not b.started.is_set()
    assert call.attempts == 1
    assert hedges(metrics, "won") == hedges(metrics, "lost") == 0


async def test_the_hedge_answers_first_and_the_slow_one_is_cancelled() -> None:
    clock = FakeClock(autoadvance=False)
    hedging, metrics, call = make(clock)
    a, b = Slow("a"), Slow("b")
    race = asyncio.create_task(hedging.race(call, ("a", a), ("b", b)))
    await a.started.wait()
    clock.advance(2.0)
    await b.started.wait()
    expected = b.answer()
    assert await race is expected
    assert a.cancelled
    assert call.attempts == 2  # both attempts count
    assert call.fallbacks == [("a", "hedged")]
    assert hedges(metrics, "won") == 1


async def test_the_original_may_still_win() -> None:
    clock = FakeClock(autoadvance=False)
    hedging, metrics, call = make(clock)
    a, b = Slow("a"), Slow("b")
    race = asyncio.create_task(hedging.race(call, ("a", a), ("b", b)))
    await a.started.wait()
    clock.advance(2.0)
    await b.started.wait()
    expected = a.answer()
    assert await race is expected
    assert b.cancelled
    assert hedges(metrics, "lost") == 1


async def test_a_failed_original_leaves_the_race_to_the_hedge() -> None:
    clock = FakeClock(autoadvance=False)
    hedging, metrics, call = make(clock)
    a, b = Slow("a"), Slow("b")
    race = asyncio.create_task(hedging.race(call, ("a", a), ("b", b)))
    await a.started.wait()
    clock.advance(2.0)
    await b.started.wait()
    a.fail()
    await settle()
    assert not race.done()
    expected = b.answer()
    assert await race is expected
    assert hedges(metrics, "won") == 1


async def test_both_failing_moves_the_chain_past_both() -> None:
    clock = FakeClock(autoadvance=False)
    hedging, metrics, call = make(clock)
    a, b = Slow("a"), Slow("b")
    race = asyncio.create_task(hedging.race(call, ("a", a), ("b", b)))
    await a.started.wait()
    clock.advance(2.0)
    await b.started.wait()
    b.fail()
    a.fail()
    with pytest.raises(HedgeFailed) as caught:
        await race
    assert [name for name, _ in caught.value.failures] == ["a", "b"]
    assert hedges(metrics, "failed") == 1


async def test_no_budget_no_hedge() -> None:
    clock = FakeClock(autoadvance=False)
    hedging, metrics, call = make(clock, Budget(0.0, 0.0))
    call_budget = hedging.budget
    assert not call_budget.try_withdraw()  # empty from the start
    a, b = Slow("a"), Slow("b")
    race = asyncio.create_task(hedging.race(call, ("a", a), ("b", b)))
    await a.started.wait()
    clock.advance(2.0)
    await settle()
    assert not b.started.is_set()
    expected = a.answer()
    assert await race is expected
    assert hedges(metrics, "refused") == 1


async def test_a_client_leaving_cancels_both() -> None:
    clock = FakeClock(autoadvance=False)
    hedging, _, call = make(clock)
    a, b = Slow("a"), Slow("b")
    race = asyncio.create_task(hedging.race(call, ("a", a), ("b", b)))
    await a.started.wait()
    clock.advance(2.0)
    await b.started.wait()
    race.cancel()
    with pytest.raises(asyncio.CancelledError):
        await race
    assert a.cancelled
    assert b.cancelled


def test_no_hedge_when_the_deadline_ends_first() -> None:
    assert should_hedge(2.0, 10.0)
    assert not should_hedge(2.0, 2.0)


async def test_a_near_deadline_runs_the_target_alone() -> None:
    clock = FakeClock(autoadvance=False)
    hedging, _, call = make(clock)
    call.deadline = Deadline.start(clock, 1.0)
    b: Handler = Slow("b")

    async def quick(call: Call) -> Answer:
        return Answer(200, CIMultiDict(), Upstream("a", "http://a", "openai"))

    answer = await hedging.race(call, ("a", quick), ("b", b))
    assert answer.upstream.name == "a"
