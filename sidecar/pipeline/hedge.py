"""Hedged requests: no first byte after ``hedge.after``? One extra attempt on the next target.

The fallback stage hands ``Hedging.race`` a target and the one after it (the
next deployment of the tier, else the next fallback step). The first target
starts at once; if it has not answered (streams: first token) when the timer
on the injected clock fires, and the retry budget grants a token, the second
starts on a copy of the Call (its own adapter output and counters, merged back
afterwards; the request's scope shared). The first answer wins and the other is
cancelled and awaited, which closes its upstream connection and releases what
it held — an answer that arrived too late included, and both when the client
leaves mid-race. A target that gives up leaves the race
to the other; when both give up the chain goes on after both (``HedgeFailed``).
A failure that is never failed over (a 400 ...) from the first target ends the
race at once; from the hedge it waits for the first target, as it would have
waited in the plain chain.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace
from typing import Literal

from sidecar.observability.logs import log_attempt
from sidecar.observability.metrics import Metrics
from sidecar.pipeline.call import Answer, Call, TargetFailed
from sidecar.pipeline.tier import Candidate
from sidecar.resilience.budget import RetryBudget
from sidecar.resilience.clock import Clock

HedgeResult = Literal["won", "lost", "failed", "refused"]


class HedgeFailed(Exception):
    """A target and its hedge both gave up; the fallback chain goes on after both."""

    def __init__(self, failures: list[tuple[str, TargetFailed]]) -> None:
        super().__init__(", ".join(f"{name}: {failed.reason}" for name, failed in failures))
        self.failures = failures


def should_hedge(after: float, remaining: float) -> bool:
    """Whether waiting *after* seconds for a first byte still leaves time for a hedge."""
    return after < remaining


@dataclass(frozen=True, slots=True)
class Hedging:
    after: float
    clock: Clock
    budget: RetryBudget
    metrics: Metrics

    async def race(self, call: Call, first: Candidate, second: Candidate) -> Answer:
        """*first*'s answer, or *second*'s when it was hedged to and answered first."""
        assert call.deadline is not None
        if not should_hedge(self.after, call.deadline.remaining()):
            return await first[1](call)
        primary = asyncio.ensure_future(first[1](call))
        timer = asyncio.ensure_future(self.clock.sleep(self.after))
        try:
            await asyncio.wait((primary, timer), return_when=asyncio.FIRST_COMPLETED)
        except BaseException:  # the client left
            await _cancel(primary)
            _release(primary)
            raise
        finally:
            timer.cancel()
        if primary.done():
            return primary.result()
        if not self.budget.try_withdraw():
            self._report(call, first[0], second[0], "refused")
            return await primary
        return await self._hedged(call, primary, first[0], second)

    async def _hedged(
        self, call: Call, primary: asyncio.Future[Answer], name: str, second: Candidate
    ) -> Answer:
        fork = replace(call, fallbacks=[], outgoing=None, upstream_seconds=0.0)
        fork.backoff_seconds = 0.0
        base = call.attempts
        hedge = asyncio.ensure_future(second[1](fork))
        answer: Answer | None = None
        result: HedgeResult = "failed"
        failed: TargetFailed | None = None
        hedge_error: BaseException | None = None
        pending: set[asyncio.Future[Answer]] = {primary, hedge}
        try:
            while answer is None and pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                if primary in done:
                    error = primary.exception()
                    if error is None:
                        answer, result = primary.result(), "lost"
                    elif isinstance(error, TargetFailed):
                        failed = error
                    else:
                        raise error
                if hedge in done and answer is None:
                    hedge_error = hedge.exception()
                    if hedge_error is None:
                        answer, result = hedge.result(), "won"
        finally:
            await _cancel(primary, hedge)
            _merge(call, fork, base, won=result == "won")
            for task in (primary, hedge):  # an answer that came too late: release it now
                _release(task, keep=answer)
            self._report(call, name, second[0], result)
        if answer is not None:
            if result == "won":
                call.fallbacks.append((name, "hedged"))
            return answer
        assert failed is not None
        if isinstance(hedge_error, TargetFailed):
            raise HedgeFailed([(name, failed), (second[0], hedge_error)])
        assert hedge_error is not None
        raise hedge_error

    def _report(self, call: Call, name: str, to: str, result: HedgeResult) -> None:
        self.metrics.hedges.labels(call.route.name, name, to, result).inc()
        log_attempt(
            {
                "request_id": call.request_id,
                "route": call.route.name,
                "upstream": name,
                "event": "hedge",
                "hedge_upstream": to,
                "after_ms": round(self.after * 1000, 1),
                "result": result,
            }
        )


async def _cancel(*tasks: asyncio.Future[Answer]) -> None:
    """Cancel what is still running and wait until it has closed its upstream response."""
    running = [task for task in tasks if not task.done()]
    for task in running:
        task.cancel()
    if running:
        await asyncio.wait(running)


def _release(task: asyncio.Future[Answer], keep: Answer | None = None) -> None:
    """A finished task's answer, unless it is *keep* (the one going to the client): let go."""
    if task.done() and not task.cancelled() and task.exception() is None:
        answer = task.result()
        if answer is not keep:
            answer.done("cancelled")


def _merge(call: Call, fork: Call, base: int, *, won: bool) -> None:
    """Bring the hedge's counters back (and its adapter output, when it won)."""
    call.attempts += fork.attempts - base
    call.upstream_seconds += fork.upstream_seconds
    call.backoff_seconds += fork.backoff_seconds
    call.fallbacks.extend(fork.fallbacks)
    if won:
        call.outgoing = fork.outgoing
