"""Draining on shutdown: readiness off, no new work, in-flight requests finish within a grace.

Theory of operation: each proxied request registers its task. ``drain()`` marks
the sidecar draining (``/ready`` answers 503, new requests on kept-alive
connections get a 503), waits until no request is left or the grace period
ends, then cancels what remains; those requests end with a final error in the
client's format (streams: an error event) and are counted.
"""

from __future__ import annotations

import asyncio
import contextlib


class Lifecycle:
    def __init__(self) -> None:
        self.draining = False
        self.aborting = False
        self._tasks: set[asyncio.Task[object]] = set()
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    def track(self) -> asyncio.Task[object] | None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
            self._idle.clear()
        return task

    def untrack(self, task: asyncio.Task[object] | None) -> None:
        if task is not None:
            self._tasks.discard(task)
        if not self._tasks:
            self._idle.set()

    async def drain(self, grace: float) -> int:
        """Wait up to *grace* seconds for in-flight requests; cancel the rest. Returns how
        many were cancelled."""
        self.draining = True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), grace)
        left = list(self._tasks)
        if not left:
            return 0
        self.aborting = True
        for task in left:
            task.cancel()
        await asyncio.wait(left, timeout=5.0)
        return len(left)
