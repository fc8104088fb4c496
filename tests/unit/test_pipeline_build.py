"""Compiling routes into pipelines: state keyed by stable names survives a reload."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from sidecar.pipeline.build import Registries, make_runtime
from sidecar.policy.loader import load_policy
from sidecar.resilience.breaker import BreakerRegistry
from sidecar.resilience.clock import FakeClock
from sidecar.upstream import UpstreamPools

POLICY = """\
version: 1
upstreams:
  a: {url: http://127.0.0.1:9, format: openai}
routes:
  - name: chat
    match: {path: /v1/chat/completions}
    retry: {budget: {ratio: 50%}}
    breaker: {consecutive_failures: 2, open_for: 10s}
    fallback: [{upstream: a}]
"""


async def test_budgets_and_breakers_carry_over_a_reload(tmp_path: Path) -> None:
    clock = FakeClock()
    registries = Registries(clock, BreakerRegistry(clock))
    (tmp_path / "p.yaml").write_text(POLICY)
    first = load_policy(tmp_path, {})
    pools = UpstreamPools()
    try:
        runtime = make_runtime(first, registries, pools)
        budget = runtime.pipelines["chat"].budget
        breaker = registries.breakers.get("chat:a", first.routes[0].breaker)
        for _ in range(2):
            permit = breaker.acquire()
            assert permit is not None
            breaker.record(permit, "failure")
        assert breaker.state == "open"

        (tmp_path / "p.yaml").write_text(POLICY.replace("open_for: 10s", "open_for: 20s"))
        second = load_policy(tmp_path, {})
        reloaded = make_runtime(second, registries, pools)
    finally:
        await pools.close()

    assert reloaded.pipelines["chat"].budget is budget  # same route name: same budget
    same = registries.breakers.get("chat:a", second.routes[0].breaker)
    assert same is breaker
    assert same.state == "open"  # the open breaker stayed open across the reload
    assert same.policy.open_for == 20.0  # and took the new settings
    clock.advance(15)
    assert same.state == "open"  # 20 s now, not 10 s
    clock.advance(5)
    assert same.state == "half_open"


async def test_a_renamed_route_starts_fresh(tmp_path: Path) -> None:
    clock = FakeClock()
    registries = Registries(clock, BreakerRegistry(clock))
    (tmp_path / "p.yaml").write_text(POLICY)
    first = load_policy(tmp_path, {})
    (tmp_path / "p.yaml").write_text(POLICY.replace("name: chat", "name: talk"))
    second = load_policy(tmp_path, {})
    pools = UpstreamPools()
    one = make_runtime(first, registries, pools)
    two = make_runtime(second, registries, pools)
    await pools.close()
    assert one.pipelines["chat"].budget is not two.pipelines["talk"].budget
    assert dataclasses.replace(first.routes[0], name="talk") == second.routes[0]


async def test_each_upstream_has_its_own_pool_with_its_limit(tmp_path: Path) -> None:
    two = POLICY.replace(
        "  a: {url: http://127.0.0.1:9, format: openai}",
        "  a: {url: http://127.0.0.1:9, format: openai, pool: {max_connections: 2}}\n"
        "  b: {url: http://127.0.0.1:9, format: openai, pool: {max_connections: 3}}",
    )
    (tmp_path / "p.yaml").write_text(two)
    policy = load_policy(tmp_path, {})
    pools = UpstreamPools()
    try:
        a = pools.session_for(policy.upstreams["a"])
        b = pools.session_for(policy.upstreams["b"])
        assert a is not b  # same host and port, separate limits
        assert (a.connector.limit, b.connector.limit) == (2, 3)  # type: ignore[union-attr]
        assert a.connector.limit_per_host == 0  # type: ignore[union-attr]
        assert pools.session_for(policy.upstreams["a"]) is a  # reused while the limit stays
        (tmp_path / "p.yaml").write_text(two.replace("max_connections: 2", "max_connections: 5"))
        changed = pools.session_for(load_policy(tmp_path, {}).upstreams["a"])
        assert changed is not a
        assert changed.connector.limit == 5  # type: ignore[union-attr]
        assert not a.closed  # requests that started before the reload keep their pool
    finally:
        await pools.close()
    assert a.closed
    assert changed.closed
