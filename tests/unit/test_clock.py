"""FakeClock: time moves only when told; sleepers wake in due order, never early."""

from __future__ import annotations

import asyncio

import pytest

from sidecar.resilience.clock import FakeClock, SystemClock


async def test_autoadvance_records_and_moves_time() -> None:
    clock = FakeClock(start=10.0)
    await clock.sleep(1.5)
    await clock.sleep(0.25)
    assert clock.slept == [1.5, 0.25]
    assert clock.now() == pytest.approx(11.75)


async def test_negative_sleep_is_zero() -> None:
    clock = FakeClock(start=5.0)
    await clock.sleep(-3.0)
    assert clock.slept == [0.0]
    assert clock.now() == 5.0


def test_default_start_and_manual_advance() -> None:
    clock = FakeClock()
    assert clock.now() == 1000.0
    clock.advance(2.5)
    assert clock.now() == 1002.5


async def _sleeper(clock: FakeClock, delay: float, name: str, woke: list[str]) -> None:
    await clock.sleep(delay)
    woke.append(name)


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_manual_advance_wakes_due_sleepers_in_order() -> None:
    clock = FakeClock(start=0.0, autoadvance=False)
    woke: list[str] = []
    tasks = [
        asyncio.create_task(_sleeper(clock, 3.0, "c", woke)),
        asyncio.create_task(_sleeper(clock, 1.0, "a", woke)),
        asyncio.create_task(_sleeper(clock, 2.0, "b", woke)),
        asyncio.create_task(_sleeper(clock, 2.0, "b2", woke)),  # same due time: FIFO
    ]
    await _settle()
    assert woke == []
    assert clock.slept == [3.0, 1.0, 2.0, 2.0]
    assert clock.now() == 0.0  # sleeping does not move time

    clock.advance(0.5)
    await _settle()
    assert woke == []

    clock.advance(1.5)  # t = 2.0: a, b, b2 due (b before b2: registration order)
    await _settle()
    assert woke == ["a", "b", "b2"]
    assert not tasks[0].done()

    clock.advance(0.999)
    await _settle()
    assert woke == ["a", "b", "b2"]

    clock.advance(0.001)
    await _settle()
    assert woke == ["a", "b", "b2", "c"]
    await asyncio.gather(*tasks)


async def test_sleep_zero_without_autoadvance_waits_for_advance() -> None:
    clock = FakeClock(start=0.0, autoadvance=False)
    woke: list[str] = []
    task = asyncio.create_task(_sleeper(clock, 0.0, "now", woke))
    await _settle()
    assert woke == []
    clock.advance(0.0)
    await _settle()
    assert woke == ["now"]
    await task


async def test_cancelled_sleeper_is_skipped() -> None:
    clock = FakeClock(start=0.0, autoadvance=False)
    woke: list[str] = []
    cancelled = asyncio.create_task(_sleeper(clock, 1.0, "cancelled", woke))
    kept = asyncio.create_task(_sleeper(clock, 1.0, "kept", woke))
    await _settle()
    cancelled.cancel()
    await _settle()
    clock.advance(1.0)
    await _settle()
    assert woke == ["kept"]
    assert cancelled.cancelled()
    await kept


async def test_system_clock_is_monotonic_and_sleep_zero_returns() -> None:
    clock = SystemClock()
    before = clock.now()
    await clock.sleep(-1.0)
    await clock.sleep(0.0)
    assert clock.now() >= before
