"""Tiers (balanced deployments as one fallback step) and hedging: accepted, compiled, refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from sidecar.policy.errors import PolicyError
from sidecar.policy.explain import explain, route_json
from sidecar.policy.loader import load_policy
from sidecar.policy.model import Hedge, PolicySet, Tier

HEAD = """\
version: 1
upstreams:
  east: {url: http://e, format: openai}
  west: {url: http://w, format: openai}
  anthropic: {url: http://a, format: anthropic}
routes:
  - name: chat
    match: {path: /v1/chat/completions}
"""

GOOD = (
    HEAD
    + """\
    hedge: {after: 2s}
    fallback:
      - tier:
          strategy: weighted
          targets:
            - {upstream: east, weight: 3}
            - {upstream: west, weight: 1, model: gpt-4o}
      - upstream: anthropic
"""
)


def load(directory: Path, text: str) -> PolicySet:
    (directory / "p.yaml").write_text(text)
    return load_policy(directory, {})


def errors(directory: Path, text: str) -> list[str]:
    with pytest.raises(PolicyError) as caught:
        load(directory, text)
    return [str(issue).replace(f"{directory}/", "") for issue in caught.value.issues]


def test_a_tier_compiles_to_one_step_of_the_chain(tmp_path: Path) -> None:
    route = load(tmp_path, GOOD).routes[0]
    east, west, anthropic = route.fallback  # the flat list keeps every deployment
    assert [t.upstream.name for t in route.fallback] == ["east", "west", "anthropic"]
    assert (east.weight, west.weight, west.model) == (3.0, 1.0, "gpt-4o")
    assert route.tiers == (Tier("chat:east+west", (east, west), "weighted"),)
    assert route.tiers[0].targets[0] is east
    assert route.steps() == (route.tiers[0], anthropic)
    assert route.hedge == Hedge(2.0)


def test_tier_defaults_weighted_and_no_hedge(tmp_path: Path) -> None:
    text = HEAD + "    fallback:\n      - tier: {targets: [{upstream: east}, {upstream: west}]}\n"
    route = load(tmp_path, text).routes[0]
    assert route.tiers[0].strategy == "weighted"
    assert [t.weight for t in route.fallback] == [1.0, 1.0]
    assert route.hedge is None


@pytest.mark.parametrize("strategy", ["round_robin", "least_in_flight", "lowest_latency"])
def test_every_strategy_is_accepted(tmp_path: Path, strategy: str) -> None:
    text = (
        HEAD + f"    fallback:\n      - tier: {{strategy: {strategy}, "
        "targets: [{upstream: east}, {upstream: west}]}\n"
    )
    assert load(tmp_path, text).routes[0].tiers[0].strategy == strategy


def tier(body: str, extra: str = "") -> str:
    return HEAD + f"    fallback:\n      - {{tier: {body}{extra}}}\n"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            tier("{strategy: fastest, targets: [{upstream: east}]}"),
            "p.yaml:10:27: routes[0].fallback[0].tier.strategy: 'fastest' is not one of "
            "'weighted', 'round_robin', 'least_in_flight', 'lowest_latency'",
            id="unknown-strategy",
        ),
        pytest.param(
            tier("{targets: []}"),
            "p.yaml:10:26: routes[0].fallback[0].tier.targets: [] is not a list of "
            "deployments (at least one {upstream: <name>})",
            id="empty-targets",
        ),
        pytest.param(
            tier("{targets: [{upstream: east, weight: 0}]}"),
            "p.yaml:10:52: routes[0].fallback[0].tier.targets[0].weight: 0 is not a weight "
            "(a number above 0, at most 1000000)",
            id="zero-weight",
        ),
        pytest.param(
            tier("{targets: [{upstream: east, weight: -2}]}"),
            "p.yaml:10:52: routes[0].fallback[0].tier.targets[0].weight: -2 is not a weight "
            "(a number above 0, at most 1000000)",
            id="negative-weight",
        ),
        pytest.param(
            tier("{targets: [{upstream: east}]}", ", upstream: west"),
            "p.yaml:10:9: routes[0].fallback[0]: needs exactly one of 'upstream' (one target) "
            "or 'tier' (several deployments of one model)",
            id="tier-and-upstream",
        ),
        pytest.param(
            tier("{targets: [{upstream: east, when: always}]}"),
            "p.yaml:10:50: routes[0].fallback[0].tier.targets[0].when: unknown key 'when'",
            id="when-on-a-deployment",
        ),
    ],
)
def test_schema_refuses_a_bad_tier(tmp_path: Path, text: str, expected: str) -> None:
    assert errors(tmp_path, text) == [expected]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            tier("{targets: [{upstream: east}]}", ", when: context_length_exceeded"),
            "p.yaml:10:53: routes[0].fallback[0].when: a tier is a regular step: "
            "'when' is not allowed on it",
            id="tier-with-when",
        ),
        pytest.param(
            tier("{targets: [{upstream: east}]}", ", model: gpt-4o"),
            "p.yaml:10:54: routes[0].fallback[0].model: set model on the tier's deployments, "
            "not on the tier",
            id="tier-with-model",
        ),
        pytest.param(
            tier("{targets: [{upstream: east}, {upstream: easst}]}"),
            "p.yaml:10:56: routes[0].fallback[0].tier.targets[1].upstream: unknown upstream "
            "'easst' (did you mean 'east'?); defined: anthropic, east, west",
            id="unknown-upstream",
        ),
        pytest.param(
            tier("{targets: [{upstream: east}, {upstream: east}]}"),
            "p.yaml:10:56: routes[0].fallback[0].tier.targets[1].upstream: upstream 'east' "
            "is already in this tier",
            id="duplicate-deployment",
        ),
        pytest.param(
            tier("{strategy: round_robin, targets: [{upstream: east, weight: 2}]}"),
            "p.yaml:10:75: routes[0].fallback[0].tier.targets[0].weight: weight only applies "
            "to strategy 'weighted' (this tier is 'round_robin')",
            id="weight-without-weighted",
        ),
    ],
)
def test_cross_field_checks_refuse_a_bad_tier(tmp_path: Path, text: str, expected: str) -> None:
    assert errors(tmp_path, text) == [expected]


def test_hedge_after_must_be_shorter_than_the_deadline(tmp_path: Path) -> None:
    text = GOOD.replace("hedge: {after: 2s}", "deadline: 2s\n    hedge: {after: 2s}")
    assert errors(tmp_path, text) == [
        "p.yaml:10:20: routes[0].hedge.after: after (2s) is not shorter than the deadline "
        "(2s); a hedge could never be sent"
    ]


def test_hedge_needs_a_second_target(tmp_path: Path) -> None:
    text = HEAD + "    hedge: {after: 1s}\n    fallback: [{upstream: east}]\n"
    assert errors(tmp_path, text) == [
        "p.yaml:9:12: routes[0].hedge: a hedge needs a second target to go to; there is one"
    ]


def test_hedge_needs_its_after(tmp_path: Path) -> None:
    text = HEAD + "    hedge: {}\n    fallback: [{upstream: east}, {upstream: west}]\n"
    assert errors(tmp_path, text) == ["p.yaml:9:12: routes[0].hedge: missing required key 'after'"]


def test_explain_shows_the_tier_and_the_hedge(tmp_path: Path) -> None:
    policy = load(tmp_path, GOOD)
    shown = route_json(policy.routes[0])
    assert shown["tiers"] == [
        {
            "strategy": "weighted",
            "targets": [{"upstream": "east", "weight": 3.0}, {"upstream": "west", "weight": 1.0}],
        }
    ]
    assert shown["hedge"] == {"after": "2s"}
    text = explain(policy)
    assert "tier (weighted): the next 2 are one step" in text
    assert "hedge: no first byte after 2s" in text
