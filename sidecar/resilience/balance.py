"""Load balancing inside a tier: the order a request tries the tier's deployments in.

Theory of operation
-------------------
A tier is one step of the fallback chain made of several deployments of one
model (two keys, two regions). For each request a ``Balancer`` ranks the
deployments; the first is tried first and the others follow, in that order,
before the chain moves to its next step. Deployments whose breaker is open go
last (their breaker rejects them at once, so they cost nothing there, and the
"all breakers open" answer still works).

    strategy         first pick                               state it reads
    ---------------  ---------------------------------------  ------------------
    weighted         random, in proportion to weight          rng
    round_robin      in turn                                  Rotation counter
    least_in_flight  fewest attempts in flight (ties: random)  Load.in_flight
    lowest_latency   lowest EWMA latency x (in flight + 1)    Load.latency, clock

``lowest_latency`` tries a deployment first when it has no recent sample
(none yet, or none for ``STALE_AFTER``): otherwise one slow moment would keep
a deployment out of rotation for good. Multiplying by the attempts in flight
(as Finagle's peak EWMA does) keeps a burst from herding onto one deployment
before its latency catches up.

State (``Load``, ``Rotation``) lives in a ``BalanceRegistry`` keyed by stable
names, so it survives policy reloads; the ``Balancer`` itself is compiled with
the policy. Randomness and time are injected (``random.Random``, ``Clock``).
No I/O here.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Final

from sidecar.policy.model import BalanceStrategy
from sidecar.resilience.clock import Clock

ALPHA: Final = 0.3  # weight of a new latency sample in the moving average
STALE_AFTER: Final = 30.0  # seconds without a sample after which a deployment is re-measured
FAILURE_FLOOR: Final = 2.0  # a failed attempt counts as at least this many times the average


class Load:
    """What the balancer knows of one deployment: attempts in flight, recent latency."""

    __slots__ = ("in_flight", "latency", "measured_at")

    def __init__(self) -> None:
        self.in_flight = 0
        self.latency: float | None = None  # EWMA of attempt latency, seconds
        self.measured_at = float("-inf")

    def started(self) -> None:
        """An attempt went out."""
        self.in_flight += 1

    def finished(self) -> None:
        """An attempt (for streams: the whole relay) ended."""
        self.in_flight = max(0, self.in_flight - 1)

    def observe(self, seconds: float, now: float, failed: bool = False) -> None:
        """Fold one attempt's latency in; a failure counts as slow, so failing fast never wins."""
        if failed:
            seconds = max(seconds, FAILURE_FLOOR * (self.latency or seconds))
        if self.latency is None:
            self.latency = seconds
        else:
            self.latency += ALPHA * (seconds - self.latency)
        self.measured_at = now


class Rotation:
    """A round-robin position."""

    __slots__ = ("position",)

    def __init__(self) -> None:
        self.position = 0

    def take(self) -> int:
        position = self.position
        self.position += 1
        return position


class BalanceRegistry:
    """Balancer state by stable key (``<route>:<upstream>``, a tier's name); outlives reloads."""

    def __init__(self) -> None:
        self.loads: dict[str, Load] = {}
        self.rotations: dict[str, Rotation] = {}

    def load(self, key: str) -> Load:
        load = self.loads.get(key)
        if load is None:
            load = self.loads[key] = Load()
        return load

    def rotation(self, key: str) -> Rotation:
        rotation = self.rotations.get(key)
        if rotation is None:
            rotation = self.rotations[key] = Rotation()
        return rotation


class Balancer:
    """Ranks one tier's deployments (by index) for one request."""

    __slots__ = ("_clock", "_loads", "_rank", "_rng", "_rotation", "_weights", "strategy")

    def __init__(
        self,
        strategy: BalanceStrategy,
        weights: Sequence[float],
        loads: Sequence[Load],
        rotation: Rotation,
        rng: random.Random,
        clock: Clock,
    ) -> None:
        if len(weights) != len(loads) or not loads:
            raise ValueError("a balancer needs one weight and one load per deployment")
        self.strategy = strategy
        self._weights = tuple(weights)
        self._loads = tuple(loads)
        self._rotation = rotation
        self._rng = rng
        self._clock = clock
        ranks = {
            "weighted": self._weighted,
            "round_robin": self._round_robin,
            "least_in_flight": self._least_in_flight,
            "lowest_latency": self._lowest_latency,
        }
        self._rank = ranks[strategy]

    def order(self, blocked: Sequence[bool] = ()) -> list[int]:
        """Deployment indexes in the order to try them; *blocked* ones (breaker open) last."""
        count = len(self._loads)
        if not any(blocked):
            return self._rank(list(range(count)))
        ready = [index for index in range(count) if not blocked[index]]
        last = [index for index in range(count) if blocked[index]]
        return (self._rank(ready) if ready else ready) + last

    def _weighted(self, ready: list[int]) -> list[int]:
        ranked: list[int] = []
        pool = ready
        while len(pool) > 1:
            point = self._rng.random() * sum(self._weights[index] for index in pool)
            chosen = pool[-1]  # float sums can leave point a hair past the last bound
            for index in pool:
                point -= self._weights[index]
                if point < 0:
                    chosen = index
                    break
            ranked.append(chosen)
            pool = [index for index in pool if index != chosen]
        return ranked + pool

    def _round_robin(self, ready: list[int]) -> list[int]:
        start = self._rotation.take() % len(ready)
        return ready[start:] + ready[:start]

    def _least_in_flight(self, ready: list[int]) -> list[int]:
        loads, rng = self._loads, self._rng
        return sorted(ready, key=lambda index: (loads[index].in_flight, rng.random()))

    def _lowest_latency(self, ready: list[int]) -> list[int]:
        loads, rng = self._loads, self._rng
        horizon = self._clock.now() - STALE_AFTER

        def cost(index: int) -> tuple[float, float]:
            load = loads[index]
            if load.latency is None or load.measured_at < horizon:
                return (-1.0, rng.random())  # no recent sample: measure it again
            return (load.latency * (load.in_flight + 1), rng.random())

        return sorted(ready, key=cost)
