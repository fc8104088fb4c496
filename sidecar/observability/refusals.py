"""Refusal lines: requests answered before routing, logged at a bounded rate.

A request refused before it had a pipeline call (a path trick, no route, a
body too large, slow or not JSON, an unknown encoding, draining, no policy)
has no request line; ``proxy.handle`` writes a refusal line for it instead, so
probing shows in the logs. Such requests cost a client almost nothing, so the
lines pass a token bucket on the injected clock: ``RATE`` lines a second after
a burst of ``BURST``. The lines it holds back are counted, and one summary
line ("suppressed K refusal lines in the last T s") follows ``SUMMARY_EVERY``
seconds after the first of them, then again for the next ones, and at
shutdown (``close``). A flood lasting D seconds writes at most
``BURST + RATE * D`` refusal lines and ``D / SUMMARY_EVERY + 1`` summaries.
"""

from __future__ import annotations

import asyncio
from typing import Final

from sidecar.observability.logs import log_refusal, log_refusals_suppressed
from sidecar.resilience.clock import Clock
from sidecar.traffic.bucket import TokenBucket

RATE: Final = 5.0  # refusal lines a second, once the burst is spent
BURST: Final = 50  # refusal lines written at once before the rate applies
SUMMARY_EVERY: Final = 10.0  # seconds between summaries of suppressed lines


class RefusalLog:
    """Writes refusal lines through a token bucket; counts and summarises the rest."""

    __slots__ = ("_bucket", "_clock", "_every", "_reporter", "_since", "suppressed")

    def __init__(
        self,
        clock: Clock,
        rate: float = RATE,
        burst: int = BURST,
        every: float = SUMMARY_EVERY,
    ) -> None:
        self._clock = clock
        self._bucket = TokenBucket(rate, burst, clock)
        self._every = every
        self._since = 0.0
        self._reporter: asyncio.Task[None] | None = None
        self.suppressed = 0  # lines held back since the last summary

    def write(self, fields: dict[str, object]) -> None:
        """One refusal line now, or one more line counted for the next summary."""
        if self._bucket.take(1) == 0.0:
            log_refusal(fields)
            return
        if self.suppressed == 0:
            self._since = self._clock.now()
            self._reporter = asyncio.get_running_loop().create_task(self._report())
        self.suppressed += 1

    async def _report(self) -> None:
        await self._clock.sleep(self._since + self._every - self._clock.now())
        self._reporter = None
        self._summarise()

    def _summarise(self) -> None:
        if self.suppressed:
            log_refusals_suppressed(self.suppressed, self._clock.now() - self._since)
            self.suppressed = 0

    async def close(self) -> None:
        """Stop the pending summary's timer and write the summary now."""
        reporter, self._reporter = self._reporter, None
        if reporter is not None:
            reporter.cancel()
            await asyncio.wait([reporter])
        self._summarise()
