"""The balancer: which deployment of a tier goes first, on a seeded rng and a fake clock."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from sidecar.policy.model import BalanceStrategy
from sidecar.resilience.balance import STALE_AFTER, Balancer, BalanceRegistry, Load
from sidecar.resilience.clock import FakeClock


def balancer(
    strategy: BalanceStrategy,
    count: int = 3,
    weights: list[float] | None = None,
    registry: BalanceRegistry | None = None,
    clock: FakeClock | None = None,
    seed: int = 1,
) -> tuple[Balancer, list[Load]]:
    registry = registry or BalanceRegistry()
    loads = [registry.load(f"chat:d{index}") for index in range(count)]
    made = Balancer(
        strategy,
        weights or [1.0] * count,
        loads,
        registry.rotation("chat:tier"),
        random.Random(seed),
        clock or FakeClock(),
    )
    return made, loads


def test_weighted_first_picks_follow_the_weights() -> None:
    tier, _ = balancer("weighted", weights=[3, 1, 0.5])
    firsts = Counter(tier.order()[0] for _ in range(9000))
    assert firsts[0] / 9000 == pytest.approx(3 / 4.5, abs=0.02)
    assert firsts[1] / 9000 == pytest.approx(1 / 4.5, abs=0.02)
    assert firsts[2] / 9000 == pytest.approx(0.5 / 4.5, abs=0.02)


def test_weighted_order_holds_every_deployment_once_and_is_seeded() -> None:
    first, _ = balancer("weighted", weights=[3, 1, 1], seed=42)
    again, _ = balancer("weighted", weights=[3, 1, 1], seed=42)
    orders = [first.order() for _ in range(50)]
    assert orders == [again.order() for _ in range(50)]
    assert all(sorted(order) == [0, 1, 2] for order in orders)


def test_round_robin_rotates_the_first_and_keeps_the_rest_in_turn() -> None:
    tier, _ = balancer("round_robin")
    assert [tier.order() for _ in range(4)] == [[0, 1, 2], [1, 2, 0], [2, 0, 1], [0, 1, 2]]


def test_round_robin_position_survives_a_rebuild_from_the_registry() -> None:
    registry = BalanceRegistry()
    before, _ = balancer("round_robin", registry=registry)
    assert before.order()[0] == 0
    after, _ = balancer("round_robin", registry=registry)  # a policy reload builds anew
    assert after.order()[0] == 1


def test_least_in_flight_goes_to_the_idlest() -> None:
    tier, loads = balancer("least_in_flight")
    for _ in range(3):
        loads[0].started()
    loads[1].started()
    assert tier.order() == [2, 1, 0]
    loads[2].started()
    loads[2].started()
    assert tier.order() == [1, 2, 0]
    loads[0].finished()
    loads[0].finished()
    loads[0].finished()
    assert tier.order()[0] == 0


def test_least_in_flight_breaks_ties_at_random() -> None:
    tier, _ = balancer("least_in_flight")
    firsts = Counter(tier.order()[0] for _ in range(300))
    assert set(firsts) == {0, 1, 2}


def test_lowest_latency_prefers_the_fastest_average() -> None:
    clock = FakeClock()
    tier, loads = balancer("lowest_latency", clock=clock)
    for load, seconds in zip(loads, [0.8, 0.2, 0.5], strict=True):
        load.observe(seconds, clock.now())
    assert tier.order() == [1, 2, 0]
    for _ in range(5):  # d1 got slow: the EWMA follows
        loads[1].observe(2.0, clock.now())
    assert tier.order() == [2, 0, 1]


def test_lowest_latency_ewma_moves_by_alpha() -> None:
    load = Load()
    load.observe(1.0, 0.0)
    load.observe(2.0, 0.0)
    assert load.latency == pytest.approx(1.3)


def test_lowest_latency_weighs_attempts_in_flight() -> None:
    clock = FakeClock()
    tier, loads = balancer("lowest_latency", count=2, clock=clock)
    loads[0].observe(0.1, clock.now())
    loads[1].observe(0.3, clock.now())
    assert tier.order()[0] == 0
    for _ in range(3):  # 0.1 x 4 > 0.3 x 1
        loads[0].started()
    assert tier.order()[0] == 1


def test_lowest_latency_measures_unknown_and_stale_deployments_first() -> None:
    clock = FakeClock()
    tier, loads = balancer("lowest_latency", count=2, clock=clock)
    loads[0].observe(0.1, clock.now())
    assert tier.order()[0] == 1  # never measured
    loads[1].observe(5.0, clock.now())
    assert tier.order()[0] == 0
    clock.advance(STALE_AFTER / 2)
    loads[0].observe(0.1, clock.now())
    clock.advance(STALE_AFTER / 2 + 1)  # d1's sample is now stale, d0's is not
    assert tier.order()[0] == 1


def test_a_failure_counts_as_slow() -> None:
    load = Load()
    load.observe(0.5, 0.0)
    load.observe(0.001, 0.0, failed=True)  # fast 500s must not look fast
    assert load.latency is not None
    assert load.latency > 0.5


@pytest.mark.parametrize(
    "strategy", ["weighted", "round_robin", "least_in_flight", "lowest_latency"]
)
def test_open_breakers_go_last_whatever_the_strategy(strategy: BalanceStrategy) -> None:
    tier, _ = balancer(strategy)
    for _ in range(20):
        order = tier.order([True, False, False])
        assert order[-1] == 0
        assert sorted(order[:2]) == [1, 2]


def test_all_open_keeps_policy_order() -> None:
    tier, _ = balancer("weighted")
    assert tier.order([True, True, True]) == [0, 1, 2]


def test_in_flight_never_goes_negative() -> None:
    load = Load()
    load.finished()
    assert load.in_flight == 0


def test_a_balancer_needs_a_weight_per_deployment() -> None:
    with pytest.raises(ValueError, match="one weight"):
        Balancer(
            "weighted", [1.0], [], BalanceRegistry().rotation("x"), random.Random(), FakeClock()
        )
