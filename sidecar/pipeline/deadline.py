"""Deadline stage: one budget for the whole chain (retries, backoff sleeps, fallbacks)."""

from __future__ import annotations

from sidecar.pipeline.call import Answer, Call, Handler, Stage
from sidecar.resilience.clock import Clock
from sidecar.resilience.deadline import Deadline


def make_deadline(seconds: float, clock: Clock) -> Stage:
    async def deadline(call: Call, following: Handler) -> Answer:
        call.deadline = Deadline.start(clock, seconds)
        return await following(call)

    return deadline
