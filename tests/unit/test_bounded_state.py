"""Bounded by construction (DESIGN rule 13), the pure parts: the bounded LRU, the registries
built on it (breakers, rate-limit buckets, shared breaker copies), metric labels, log
fields and the model name check — all on a fake clock."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import generate_latest

from sidecar.errors import SidecarError
from sidecar.observability.logs import MAX_FIELD_LENGTH, clip
from sidecar.observability.metrics import MAX_LABEL_LENGTH, MAX_MODELS, OTHER, Metrics
from sidecar.pipeline.validate import MAX_MODEL_LENGTH, check_model
from sidecar.policy.model import Breaker, RateLimit
from sidecar.policy.store import PolicyStore
from sidecar.resilience.breaker import MAX_BREAKERS, BreakerRegistry
from sidecar.resilience.clock import FakeClock
from sidecar.resilience.lru import SCAN, BoundedLRU
from sidecar.shared.breakers import SharedBreakers
from sidecar.traffic.limiter import MAX_LOCAL_KEYS, Limiter

# -- the LRU ------------------------------------------------------------------------------


def test_lru_drops_the_least_recently_used() -> None:
    lru: BoundedLRU[str, int] = BoundedLRU(3)
    for key in "abc":
        lru.put(key, ord(key))
    assert lru.get("a") == ord("a")  # a is now the most recent
    assert lru.peek("b") == ord("b")  # peeking does not count as use
    lru.put("d", 4)
    assert list(lru) == ["c", "a", "d"]
    assert (lru.evicted, lru.forced) == (1, 0)


def test_lru_spares_what_keep_protects_then_bounds_anyway() -> None:
    lru: BoundedLRU[str, int] = BoundedLRU(3, keep=lambda value: value < 0)
    lru.put("precious", -1)
    lru.put("x", 1)
    lru.put("y", 2)
    lru.put("z", 3)  # the oldest is protected: the next oldest goes
    assert list(lru) == ["precious", "y", "z"]
    for key in ("p2", "p3", "p4"):
        lru.put(key, -1)  # all protected now: the bound still holds
    assert len(lru) == 3
    assert lru.forced == 1


def test_lru_eviction_looks_at_most_scan_entries() -> None:
    looked: list[int] = []

    def keep(value: int) -> bool:
        looked.append(value)
        return True

    lru: BoundedLRU[int, int] = BoundedLRU(SCAN * 4, keep)
    for key in range(SCAN * 4 + 1):
        lru.put(key, key)
    assert len(looked) <= SCAN
    assert 0 not in lru  # nothing was spared-able in reach: the oldest went


def test_lru_rejects_a_zero_capacity() -> None:
    with pytest.raises(ValueError, match="capacity"):
        BoundedLRU(0)


# -- breakers -----------------------------------------------------------------------------


def test_breaker_registry_keeps_at_most_its_capacity() -> None:
    registry = BreakerRegistry(FakeClock())
    policy = Breaker()
    for index in range(MAX_BREAKERS * 3):
        registry.get(f"chat:up:model-{index}", policy)
    assert len(registry) == MAX_BREAKERS
    assert len(registry.all()) == MAX_BREAKERS
    assert registry.find("chat:up:model-0") is None  # the least recently used went


def test_an_open_breaker_outlives_a_flood_of_closed_ones() -> None:
    clock = FakeClock(start=0.0)
    registry = BreakerRegistry(clock, capacity=10)
    policy = Breaker(consecutive_failures=1, open_for=30.0)
    tripped = registry.get("chat:up:overloaded", policy)
    permit = tripped.acquire()
    assert permit is not None
    tripped.record(permit, "failure")
    assert tripped.state == "open"
    for index in range(100):
        registry.get(f"chat:up:model-{index}", policy)
    assert registry.find("chat:up:overloaded") is tripped  # its open state is kept
    assert len(registry) == 10


def test_a_breaker_in_use_stays() -> None:
    registry = BreakerRegistry(FakeClock(), capacity=10)
    policy = Breaker()
    busy = registry.get("chat:up:popular", policy)
    for index in range(100):
        registry.get(f"chat:up:model-{index}", policy)
        registry.get("chat:up:popular", policy)  # asked for on every other request
    assert registry.find("chat:up:popular") is busy


class _Store:
    """Just enough of a SharedStore: every script answers "closed"."""

    prefix = "test"

    def key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    async def run(self, script: str, keys: list[str], arguments: list[object], op: str) -> list:
        return [b"closed", 0, b"0", 0, 1, 0]


async def test_shared_breaker_copies_are_bounded() -> None:
    views = SharedBreakers(FakeClock())
    store = _Store()
    for index in range(MAX_BREAKERS + 500):
        await views.current(store, f"chat:up:model-{index}")
    assert len(views._views) == MAX_BREAKERS
    assert views.view(store, f"chat:up:model-{MAX_BREAKERS + 499}") is not None
    assert views.view(store, "chat:up:model-0") is None


# -- rate-limit buckets -------------------------------------------------------------------


async def test_a_flood_of_new_keys_cannot_refill_a_limited_clients_bucket() -> None:
    limiter = Limiter(FakeClock(start=0.0))
    limit = RateLimit(requests_per_minute=10, burst=0.1, key="client_key")  # one at a time
    assert await limiter.take("route:r:greedy", limit, 0, None) == 0.0
    for index in range(MAX_LOCAL_KEYS + 100):
        await limiter.take(f"route:r:new-{index}", limit, 0, None)
        if index % 50 == 0:  # the limited client keeps trying
            assert await limiter.take("route:r:greedy", limit, 0, None) > 0
    assert len(limiter) == MAX_LOCAL_KEYS
    assert await limiter.take("route:r:greedy", limit, 0, None) > 0


async def test_full_buckets_go_before_spent_ones() -> None:
    clock = FakeClock(start=0.0)
    limiter = Limiter(clock)
    limit = RateLimit(requests_per_minute=6)  # capacity 6, one back every 10 s
    for _ in range(6):
        await limiter.take("route:r:spent", limit, 0, None)  # empty, then quiet
    for index in range(MAX_LOCAL_KEYS - 1):
        await limiter.take(f"route:r:k{index}", limit, 0, None)  # 5 of 6 left
    clock.advance(15.0)  # the others are full again; "spent" has 1.5 of 6
    await limiter.take("route:r:newcomer", limit, 0, None)  # past the bound: one goes
    assert await limiter.take("route:r:spent", limit, 0, None) == 0.0
    assert await limiter.take("route:r:spent", limit, 0, None) > 0  # its level was kept


# -- metric labels and log fields ---------------------------------------------------------


def test_breaker_state_has_one_sample_per_label() -> None:
    clock = FakeClock(start=0.0)
    metrics = Metrics()
    registry = BreakerRegistry(clock)
    metrics.watch(PolicyStore(Path("/nonexistent"), {}, str), registry, lambda: 0)
    policy = Breaker(consecutive_failures=1, open_for=30.0)
    for index in range(600):
        registry.get(f"chat:up:model-{index}", policy)
    generate_latest(metrics.registry)  # the first 256 keys get their labels
    last = registry.get("chat:up:model-599", policy)  # not among them
    permit = last.acquire()
    assert permit is not None
    last.record(permit, "failure")
    samples = [
        line
        for line in generate_latest(metrics.registry).decode().splitlines()
        if line.startswith("sidecar_breaker_state{")
    ]
    labels = [line.split('"')[1] for line in samples]
    assert len(labels) == len(set(labels)) == 257  # 256 breakers and _other
    assert f'sidecar_breaker_state{{breaker="{OTHER}"}} 2.0' in samples  # the worst: open


def test_model_labels_are_bounded_in_number_and_length() -> None:
    metrics = Metrics()
    assert metrics.model_label("m" * (MAX_LABEL_LENGTH + 1)) == OTHER
    for index in range(MAX_MODELS * 3):
        metrics.count_tokens("up", f"model-{index}", 1, 1)
    text = generate_latest(metrics.registry).decode()
    lines = [line for line in text.splitlines() if line.startswith("sidecar_tokens_total{")]
    models = {line.split('model="')[1].split('"')[0] for line in lines}
    assert len(models) == MAX_MODELS + 1
    assert OTHER in models


def test_long_log_fields_are_cut_with_a_marker() -> None:
    fields: dict[str, object] = {
        "model": "m" * 1000,
        "route": "chat",
        "fallbacks": ["up:" + "x" * 500, "b:timeout"],
        "attempt": 1,
    }
    clipped = clip(fields)
    model = clipped["model"]
    assert isinstance(model, str)
    assert model == "m" * MAX_FIELD_LENGTH + f"…[+{1000 - MAX_FIELD_LENGTH} chars]"
    cut = "up:" + "x" * (MAX_FIELD_LENGTH - 3) + "…[+247 chars]"
    assert clipped["fallbacks"] == [cut, "b:timeout"]
    assert clipped["route"] == "chat"
    assert clipped["attempt"] == 1
    assert fields["model"] == "m" * 1000  # the caller's dict is not changed
    short = {"model": "gpt-4o", "route": "chat"}
    assert clip(short) is short  # nothing to cut: no copy


# -- the model name at intake -------------------------------------------------------------


def test_model_names_are_checked_for_length_and_printable_characters() -> None:
    check_model("m" * MAX_MODEL_LENGTH)
    check_model("arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude")
    check_model("ft:gpt-4o-mini:acme:größe:abc123")
    for bad in ("m" * (MAX_MODEL_LENGTH + 1), "gpt-4o\n", "gpt\x00", "a\u200bb"):
        with pytest.raises(SidecarError) as raised:
            check_model(bad)
        assert raised.value.status == 400
        assert raised.value.param == "model"
        assert bad not in raised.value.message
