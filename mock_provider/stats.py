"""Request counters, so tests and demos can prove how many calls reached a provider."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass(slots=True)
class Visit:
    """What one request turned out to be; filled in by the handler as it learns."""

    model: str | None = None
    outcome: str = "bad_request"


class Stats:
    """Counts requests by path, model and outcome, and tracks requests in flight."""

    def __init__(self) -> None:
        self._counts: Counter[tuple[str, str, str]] = Counter()
        self.in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @contextmanager
    def visit(self, path: str) -> Iterator[Visit]:
        """Count one request in flight; record it by path, model and outcome when done."""
        self.in_flight += 1
        self._idle.clear()
        visit = Visit()
        try:
            yield visit
        finally:
            self._counts[(path, visit.model or "-", visit.outcome)] += 1
            self.in_flight -= 1
            if self.in_flight == 0:
                self._idle.set()

    async def wait_idle(self) -> None:
        """Return once no request is in flight (handlers of gone clients included)."""
        await self._idle.wait()

    def reset(self) -> None:
        self._counts.clear()

    def snapshot(self) -> dict[str, object]:
        by_path: Counter[str] = Counter()
        by_model: Counter[str] = Counter()
        by_outcome: Counter[str] = Counter()
        for (path, model, outcome), count in self._counts.items():
            by_path[path] += count
            by_model[model] += count
            by_outcome[outcome] += count
        return {
            "total": sum(self._counts.values()),
            "in_flight": self.in_flight,
            "by_path": dict(by_path),
            "by_model": dict(by_model),
            "by_outcome": dict(by_outcome),
            "detail": [
                {"path": path, "model": model, "outcome": outcome, "count": count}
                for (path, model, outcome), count in sorted(self._counts.items())
            ],
        }
