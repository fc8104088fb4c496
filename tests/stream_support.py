"""A scripted upstream byte source for the stream tests (relay, event reader)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

HANG = object()  # a script step that never returns


class Source:
    """Scripted chunks; an exception instance is raised; HANG waits forever; then EOF."""

    def __init__(self, steps: Iterable[object]) -> None:
        self._steps = list(steps)
        self.reads = 0

    async def readany(self) -> bytes:
        self.reads += 1
        if not self._steps:
            return b""
        step = self._steps.pop(0)
        if step is HANG:
            await asyncio.Event().wait()
        if isinstance(step, BaseException):
            raise step
        assert isinstance(step, bytes)
        return step
