"""Building the frozen objects of ``sidecar.policy.model`` from merged policy trees.

Every default is written once, in model.py. A builder starts from the model's
default object (the field default of the object that holds it, such as
``Route.retry``, else the class's) and replaces only the fields the policy
writes (``fields.given``). ``tests/unit/test_policy_defaults.py`` fails when
a builder spells out a default of its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import cast

from sidecar.policy.checks import Checker, check_backoff, check_deadline, check_window
from sidecar.policy.fallback import fallback, hedge_of
from sidecar.policy.fields import (
    auth,
    conditions,
    duration,
    given,
    header,
    header_names,
    methods,
    number,
    rate_key,
    ratio,
    same,
    secret,
    size,
    subtree,
)
from sidecar.policy.files import InputFile
from sidecar.policy.merge import RouteSource
from sidecar.policy.model import (
    Access,
    Breaker,
    Cache,
    Match,
    RateLimit,
    Retry,
    Route,
    Secret,
    StateBackend,
    Target,
    Upstream,
    Window,
)
from sidecar.typedefs import JSON as Tree
from sidecar.typedefs import WireFormat


def upstream(name: str, spec: Tree) -> Upstream:
    """The upstream *name* as *spec* writes it."""
    base = Upstream(name, cast(str, spec["url"]).rstrip("/"), cast(WireFormat, spec["format"]))
    return replace(
        base,
        **given(
            spec,
            auth=auth,
            connect_timeout=duration,
            client_auth=same,
            rate_limit=rate_limit,
            forward_headers=header_names,
        ),
        **given(subtree(spec, "pool"), max_connections=same),
        **given(subtree(spec, "capabilities"), prefill=same, tools=same),
    )


def state(spec: Tree, base: StateBackend) -> StateBackend:
    """The ``state`` block over *base* (``PolicySet.state``)."""
    return replace(base, **given(spec, backend=same, url=secret, prefix=same, timeout=duration))


def rate_limit(value: object) -> RateLimit:
    """A route's or an upstream's ``rate_limit`` block."""
    spec = cast(Tree, value)
    return replace(
        RateLimit(),
        **given(
            spec,
            requests_per_minute=same,
            tokens_per_minute=same,
            burst=number,
            key=rate_key,
            missing=same,
        ),
    )


def route(
    tree: Tree,
    upstreams: Mapping[str, Upstream],
    source: RouteSource,
    checker: Checker,
    inputs: Mapping[str, InputFile],
) -> Route | None:
    """The route of merged *tree*; None after reporting an issue (a bad keys file aside)."""
    before = len(checker.issues)
    base = Route(cast(str, tree["name"]), _match(subtree(tree, "match")), fallback=())  # set below
    deadline = duration(tree["deadline"]) if "deadline" in tree else base.deadline
    times = given(subtree(tree, "timeouts"), connect=duration, first_byte=duration, idle=duration)
    timeouts = replace(base.timeouts, **times)
    retry = _retry(subtree(tree, "retry"), base.retry)
    breaker = _breaker(subtree(tree, "breaker"), base.breaker, source, checker)
    check_deadline(tree, deadline, timeouts, retry, source, checker)
    # Defaults longer than a short deadline are clamped to it, not errors.
    if timeouts.first_byte > deadline:
        timeouts = replace(timeouts, first_byte=deadline)
    if retry.retry_after.max_wait > deadline:
        retry = replace(retry, retry_after=replace(retry.retry_after, max_wait=deadline))
    check_backoff(retry.backoff, source, checker)
    targets, tiers = fallback(tree, upstreams, source, checker)
    hedge = base.hedge
    if "hedge" in tree:
        hedge = hedge_of(subtree(tree, "hedge"), deadline, targets, source, checker)
    if len(checker.issues) != before:
        return None
    return replace(
        base,
        fallback=tuple(targets),
        validate=replace(
            base.validate,
            **given(subtree(tree, "validate"), max_body=size, max_prompt_tokens=same),
        ),
        deadline=deadline,
        timeouts=timeouts,
        retry=retry,
        breaker=breaker,
        translate=replace(
            base.translate,
            **given(subtree(tree, "translate"), max_tokens=same, unsupported=same),
        ),
        continuation=replace(
            base.continuation, **given(subtree(tree, "continuation"), enabled=same, target=same)
        ),
        access=_access(subtree(tree, "access"), base.access, source, checker, inputs),
        cache=_cache(tree, base.cache),
        tiers=tuple(tiers),
        hedge=hedge,
        limits=replace(base.limits, **given(subtree(tree, "limits"), max_in_flight=same)),
        prefer=_prefer(tree.get("prefer", True), targets, source, checker),
        **given(tree, rate_limit=rate_limit),
    )


def _prefer(
    value: object, targets: list[Target], source: RouteSource, checker: Checker
) -> tuple[str, ...] | None:
    """The upstreams a request of the route may prefer: all of its regular chain, the
    ones listed (each must be in the chain), or None (``prefer: false``)."""
    chain = tuple(dict.fromkeys(t.upstream.name for t in targets if t.when == "always"))
    if value is True:
        return chain
    if value is False:
        return None
    names = tuple(cast(list[str], value))
    for index, name in enumerate(names):
        if name not in chain:
            checker.at(
                source,
                ("prefer", index),
                f"{name!r} is not in this route's fallback chain ({', '.join(chain)})",
            )
    return names


def _match(spec: Tree) -> Match:
    prefix = "prefix" in spec
    base = Match(path=cast(str, spec["prefix" if prefix else "path"]), prefix=prefix)
    return replace(base, **given(spec, methods=methods, model=same, header=header))


def _retry(spec: Tree, base: Retry) -> Retry:
    return replace(
        base,
        **given(spec, attempts=same, on=conditions),
        backoff=replace(
            base.backoff,
            **given(
                subtree(spec, "backoff"),
                base=duration,
                max=duration,
                multiplier=number,
                jitter=same,
            ),
        ),
        retry_after=replace(
            base.retry_after, **given(subtree(spec, "retry_after"), honor=same, max_wait=duration)
        ),
        budget=replace(
            base.budget, **given(subtree(spec, "budget"), ratio=ratio, min_per_second=number)
        ),
    )


def _breaker(spec: Tree, base: Breaker, source: RouteSource, checker: Checker) -> Breaker:
    changes = given(spec, enabled=same, consecutive_failures=same, open_for=duration, key=same)
    half_open = subtree(spec, "half_open")
    if "probes" in half_open:
        changes["half_open_probes"] = half_open["probes"]
    if "window" in spec:
        written = subtree(spec, "window")
        window = Window(
            size=duration(written["size"]),
            min_calls=cast(int, written["min_calls"]),
            failure_rate=ratio(written["failure_rate"]),
        )
        check_window(spec, window, source, checker)
        changes.update(window=window, consecutive_failures=None)
    return replace(base, **changes)


def _cache(tree: Tree, base: Cache) -> Cache:
    if "cache" not in tree:
        return base
    written = given(
        subtree(tree, "cache"),
        enabled=same,
        when=same,
        ttl=duration,
        max_entries=same,
        max_entry_size=size,
    )
    return replace(base, **{"enabled": True, **written})  # a cache block turns caching on


def _access(
    spec: Tree,
    base: Access,
    source: RouteSource,
    checker: Checker,
    inputs: Mapping[str, InputFile],
) -> Access:
    keys = (
        tuple(Secret(key) for key in cast(list[str], spec["keys"])) if "keys" in spec else base.keys
    )
    return replace(
        base,
        keys=keys + _file_keys(spec, source, checker, inputs),
        **given(spec, localhost_only=same),
    )


def _file_keys(
    spec: Tree, source: RouteSource, checker: Checker, inputs: Mapping[str, InputFile]
) -> tuple[Secret, ...]:
    """The keys of ``keys_file``, one a line (``#`` comments and blank lines skipped)."""
    path = spec.get("keys_file")
    if not isinstance(path, str):
        return ()
    keys_file = inputs[path]  # read (and hashed) by the loader: see compiler.input_paths
    if keys_file.raw is None:
        checker.at(source, ("access", "keys_file"), f"cannot read {path}: {keys_file.error}")
        return ()
    try:
        lines = keys_file.raw.decode("utf-8").splitlines()
    except UnicodeDecodeError:
        checker.at(source, ("access", "keys_file"), f"{path} is not UTF-8 text")
        return ()
    found = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    if not found:
        checker.at(source, ("access", "keys_file"), f"{path} holds no keys")
    return tuple(Secret(key) for key in found)
