"""Stats.visit: counting by path, model and outcome, and the in-flight / idle tracking."""

from __future__ import annotations

import asyncio

import pytest

from mock_provider.stats import Stats


def test_fresh_stats_are_empty_and_idle() -> None:
    stats = Stats()
    assert stats.snapshot() == {
        "total": 0,
        "in_flight": 0,
        "by_path": {},
        "by_model": {},
        "by_outcome": {},
        "detail": [],
    }


def test_visit_counts_by_path_model_and_outcome() -> None:
    stats = Stats()
    for model, outcome in [("gpt-4o", "ok"), ("gpt-4o", "429"), ("gpt-4o", "ok")]:
        with stats.visit("/v1/chat/completions") as visit:
            visit.model = model
            visit.outcome = outcome
    with stats.visit("/v1/messages") as visit:
        visit.model = "claude-haiku-4-5"
        visit.outcome = "stream_cut"
    with stats.visit("/v1/messages"):
        pass  # a request that never got as far as its model
    snapshot = stats.snapshot()
    assert snapshot["total"] == 5
    assert snapshot["in_flight"] == 0
    assert snapshot["by_path"] == {"/v1/chat/completions": 3, "/v1/messages": 2}
    assert snapshot["by_model"] == {"gpt-4o": 3, "claude-haiku-4-5": 1, "-": 1}
    assert snapshot["by_outcome"] == {"ok": 2, "429": 1, "stream_cut": 1, "bad_request": 1}
    assert snapshot["detail"] == [
        {"path": "/v1/chat/completions", "model": "gpt-4o", "outcome": "429", "count": 1},
        {"path": "/v1/chat/completions", "model": "gpt-4o", "outcome": "ok", "count": 2},
        {"path": "/v1/messages", "model": "-", "outcome": "bad_request", "count": 1},
        {"path": "/v1/messages", "model": "claude-haiku-4-5", "outcome": "stream_cut", "count": 1},
    ]


def test_in_flight_while_visiting() -> None:
    stats = Stats()
    with stats.visit("/a"), stats.visit("/b"):
        assert stats.snapshot()["in_flight"] == 2
        assert stats.snapshot()["total"] == 0  # counted when done
    assert stats.snapshot()["in_flight"] == 0
    assert stats.snapshot()["total"] == 2


def test_a_visit_that_raises_is_still_counted() -> None:
    stats = Stats()

    def cancelled_handler() -> None:
        with stats.visit("/v1/messages") as visit:
            visit.model = "m"
            visit.outcome = "hang"
            raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        cancelled_handler()
    assert stats.snapshot()["by_outcome"] == {"hang": 1}
    assert stats.in_flight == 0


def test_reset_clears_counts_but_not_requests_in_flight() -> None:
    stats = Stats()
    with stats.visit("/done"):
        pass
    with stats.visit("/running"):
        stats.reset()
        assert stats.snapshot()["total"] == 0
        assert stats.snapshot()["in_flight"] == 1
    assert stats.snapshot()["by_path"] == {"/running": 1}


async def test_wait_idle_returns_at_once_when_idle() -> None:
    await asyncio.wait_for(Stats().wait_idle(), timeout=1)


async def test_wait_idle_waits_for_the_last_visit_to_end() -> None:
    stats = Stats()
    outer = stats.visit("/a")
    inner = stats.visit("/b")
    outer.__enter__()
    inner.__enter__()
    waiter = asyncio.create_task(stats.wait_idle())
    done, _ = await asyncio.wait({waiter}, timeout=0.05)
    assert not done
    inner.__exit__(None, None, None)
    done, _ = await asyncio.wait({waiter}, timeout=0.05)
    assert not done  # one request still in flight
    outer.__exit__(None, None, None)
    await asyncio.wait_for(waiter, timeout=1)
    assert stats.snapshot()["total"] == 2
