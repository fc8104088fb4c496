"""Building a route's fallback chain: targets, tiers of deployments, the hedge.

As in ``build``, a target or tier starts from the model's defaults and takes
only the fields the policy writes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import cast

from sidecar.policy.checks import (
    Checker,
    check_hedge,
    check_known_upstream,
    check_regular_target,
    check_some_fallback,
    check_target_model,
    check_tier_entry,
    check_tier_keys,
)
from sidecar.policy.errors import Path
from sidecar.policy.fields import duration, given, number, pairs, same, subtree
from sidecar.policy.merge import RouteSource
from sidecar.policy.model import Hedge, Target, Tier, Upstream
from sidecar.typedefs import JSON as Tree


def fallback(
    tree: Tree, upstreams: Mapping[str, Upstream], source: RouteSource, checker: Checker
) -> tuple[list[Target], list[Tier]]:
    """Every target of the fallback list (a tier's deployments in its place), and the tiers."""
    targets: list[Target] = []
    tiers: list[Tier] = []
    raw_targets = cast(list[Tree], tree.get("fallback", []))
    check_some_fallback(raw_targets, source, checker)
    for position, raw in enumerate(raw_targets):
        if "tier" in raw:
            tier = _tier(cast(str, tree["name"]), raw, position, upstreams, source, checker)
            if tier is not None:
                tiers.append(tier)
                targets.extend(tier.targets)
            continue
        target = _target(raw, ("fallback", position), upstreams, source, checker)
        if target is not None:
            targets.append(target)
    check_regular_target(targets, source, checker)
    return targets, tiers


def _target(
    raw: Tree, where: Path, upstreams: Mapping[str, Upstream], source: RouteSource, checker: Checker
) -> Target | None:
    """One target (a fallback step or a tier's deployment); None after reporting an issue."""
    name = cast(str, raw["upstream"])
    found = upstreams.get(name)
    if found is None:
        check_known_upstream(name, upstreams, where, source, checker)
        return None
    check_target_model(raw, where, source, checker)
    return replace(
        Target(found), **given(raw, model=same, model_map=pairs, when=same, weight=number)
    )


def _tier(
    route: str,
    raw: Tree,
    position: int,
    upstreams: Mapping[str, Upstream],
    source: RouteSource,
    checker: Checker,
) -> Tier | None:
    """The tier at *position* of the fallback list; None after reporting an issue."""
    where: Path = ("fallback", position)
    check_tier_keys(raw, where, source, checker)
    spec = subtree(raw, "tier")
    entries = cast(list[Tree], spec["targets"])
    tier = replace(Tier(f"{route}:", ()), **given(spec, strategy=same))
    targets: list[Target] = []
    seen: set[str] = set()
    for index, entry in enumerate(entries):
        at: Path = (*where, "tier", "targets", index)
        if check_tier_entry(entry, at, tier.strategy, seen, source, checker):
            target = _target(entry, at, upstreams, source, checker)
            if target is not None:
                targets.append(target)
    if len(targets) != len(entries):
        return None
    name = tier.name + "+".join(target.upstream.name for target in targets)
    return replace(tier, name=name, targets=tuple(targets))


def hedge_of(
    spec: Tree, deadline: float, targets: list[Target], source: RouteSource, checker: Checker
) -> Hedge:
    """The ``hedge`` block of a route with this *deadline* and these *targets*."""
    after = duration(spec["after"])
    check_hedge(after, deadline, targets, source, checker)
    return Hedge(after)
