"""Merging validated documents into one PolicySet: cross-field checks, then compilation.

Order: every file is schema-checked on its own; upstreams and routes are merged
(upstream names unique across files; ``defaults`` in at most one file; routes in
file order); each route is deep-merged over ``defaults``; cross-field checks
run; the result is compiled into the frozen objects of ``sidecar.policy.model``.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Literal, cast
from urllib.parse import urlsplit

from sidecar.policy.errors import Issue, Path, PolicyError
from sidecar.policy.model import (
    Access,
    Auth,
    Backoff,
    BalanceStrategy,
    Breaker,
    BreakerKey,
    Budget,
    Cache,
    ClientAuth,
    Continuation,
    Hedge,
    Jitter,
    Limits,
    Match,
    PolicySet,
    RateLimit,
    Retry,
    RetryAfter,
    RetryCondition,
    Route,
    Secret,
    StateBackend,
    Target,
    TargetWhen,
    Tier,
    Timeouts,
    Translate,
    Upstream,
    Validation,
    Window,
)
from sidecar.policy.source import Document, InputFile
from sidecar.policy.units import format_duration, parse_duration, parse_ratio, parse_size
from sidecar.typedefs import JSON as Tree  # a policy file's mapping, as parsed
from sidecar.typedefs import WireFormat


@dataclass(frozen=True, slots=True)
class _RouteSource:
    document: Document
    index: int
    tree: Tree  # the route's own keys, before defaults


class _Checker:
    """Collects issues, locating a merged value where it was written."""

    def __init__(self, defaults: tuple[Document, Tree] | None) -> None:
        self.issues: list[Issue] = []
        self._defaults = defaults

    def at(self, source: _RouteSource, subpath: Path, message: str) -> None:
        if _has(source.tree, subpath) or self._defaults is None:
            self.issues.append(source.document.issue(("routes", source.index, *subpath), message))
        elif _has(self._defaults[1], subpath):
            self.issues.append(self._defaults[0].issue(("defaults", *subpath), message))
        else:
            self.issues.append(source.document.issue(("routes", source.index), message))


def input_paths(documents: list[Document]) -> list[str]:
    """The files schema-valid *documents* read besides themselves (``access.keys_file``,
    in ``defaults`` and in routes), in order; they are part of the content hash."""
    paths: list[str] = []
    for document in documents:
        data = cast(Tree, document.data)
        defaults = cast(Tree, data.get("defaults", {}))
        for tree in [defaults, *cast(list[Tree], data.get("routes", []))]:
            path = cast(Tree, tree.get("access", {})).get("keys_file")
            if isinstance(path, str):
                paths.append(path)
    return paths


def compile_policy(
    documents: list[Document], content_hash: str, inputs: Iterable[InputFile]
) -> PolicySet:
    """Merge schema-valid *documents* into a PolicySet or raise PolicyError with every issue.

    *inputs* are the files of ``input_paths(documents)``, already read (and hashed)."""
    read = {extra.path: extra for extra in inputs}
    issues: list[Issue] = []
    upstreams: dict[str, Upstream] = {}
    upstream_files: dict[str, str] = {}
    defaults: tuple[Document, Tree] | None = None
    state: tuple[Document, StateBackend] | None = None
    routes: list[_RouteSource] = []
    for document in documents:
        data = cast(Tree, document.data)
        if "state" in data:
            if state is not None:
                message = f"state already defined in {state[0].file}"
                issues.append(document.issue(("state",), message))
            else:
                state = (document, _state(document, cast(Tree, data["state"]), issues))
        for name, spec in cast(Tree, data.get("upstreams", {})).items():
            if name in upstreams:
                first = upstream_files[name]
                issues.append(
                    document.issue(("upstreams", name), f"upstream already defined in {first}")
                )
                continue
            upstreams[name] = _upstream(name, cast(Tree, spec))
            upstream_files[name] = document.file
        if "defaults" in data:
            if defaults is not None:
                message = f"defaults already defined in {defaults[0].file}"
                issues.append(document.issue(("defaults",), message))
            else:
                defaults = (document, cast(Tree, data["defaults"]))
        for index, tree in enumerate(cast(list[Tree], data.get("routes", []))):
            routes.append(_RouteSource(document, index, tree))
    checker = _Checker(defaults)
    checker.issues.extend(issues)
    if not routes:
        files = ", ".join(document.file for document in documents)
        checker.issues.append(Issue(files, 0, 0, (), "no routes defined"))
    compiled: list[Route] = []
    names: dict[str, _RouteSource] = {}
    for source in routes:
        name = cast(str, source.tree["name"])
        if name in names:
            other = names[name]
            checker.at(
                source, ("name",), f"route name {name!r} already used in {other.document.file}"
            )
            continue
        names[name] = source
        route = _route(
            _merge(_inherited(defaults[1] if defaults else {}, source.tree), source.tree),
            upstreams,
            source,
            checker,
            read,
        )
        if route is not None:
            for earlier in compiled:
                if earlier.match == route.match:
                    checker.at(
                        source,
                        ("match",),
                        f"never matches: route {earlier.name!r} before it has the same match",
                    )
            compiled.append(route)
    if checker.issues:
        unique = dict.fromkeys(checker.issues)  # a bad default is reported once, not per route
        raise PolicyError(sorted(unique, key=lambda i: (i.file, i.line, i.column)))
    loaded = tuple(document.file for document in documents)
    backend = state[1] if state is not None else StateBackend()
    return PolicySet(content_hash, loaded, upstreams, tuple(compiled), backend)


def _state(document: Document, spec: Tree, issues: list[Issue]) -> StateBackend:
    backend = cast(Literal["memory", "redis"], spec.get("backend", "memory"))
    url = cast(str | None, spec.get("url"))
    if backend == "redis" and not url:
        issues.append(document.issue(("state",), "backend redis needs a url (e.g. ${REDIS_URL})"))
    elif backend == "redis" and url and not _port_ok(url):
        # Found here, not when the Redis client is built; the text is not echoed (secret).
        issues.append(document.issue(("state", "url"), "the port is not a number 0-65535"))
    return StateBackend(
        backend=backend,
        url=Secret(url) if url else None,
        prefix=cast(str, spec.get("prefix", "sidecar")),
        timeout=_seconds(spec, "timeout", 0.05),
    )


def _port_ok(url: str) -> bool:
    try:
        urlsplit(url).port  # noqa: B018 - parsing the port is the check
    except ValueError:
        return False
    return True


def _rate_limit(spec: Tree | None) -> RateLimit | None:
    if spec is None:
        return None
    key = cast(str, spec.get("key", "route"))
    if key.startswith("header:"):
        key = key.lower()
    return RateLimit(
        requests_per_minute=cast(int | None, spec.get("requests_per_minute")),
        tokens_per_minute=cast(int | None, spec.get("tokens_per_minute")),
        burst=float(cast(float, spec.get("burst", 1.0))),
        key=key,
    )


def _cache(spec: Tree | None) -> Cache:
    if spec is None:
        return Cache()
    return Cache(
        enabled=cast(bool, spec.get("enabled", True)),
        when=cast(Literal["deterministic", "always"], spec.get("when", "deterministic")),
        ttl=_seconds(spec, "ttl", 300.0),
        max_entries=cast(int, spec.get("max_entries", 1000)),
        max_entry_size=parse_size(cast(str | int, spec.get("max_entry_size", "1MiB"))),
    )


def _route(
    tree: Tree,
    upstreams: Mapping[str, Upstream],
    source: _RouteSource,
    checker: _Checker,
    inputs: Mapping[str, InputFile],
) -> Route | None:
    before = len(checker.issues)
    deadline = _seconds(tree, "deadline", 60.0)
    timeouts = _timeouts(cast(Tree, tree.get("timeouts", {})))
    retry = _retry(cast(Tree, tree.get("retry", {})))
    breaker = _breaker(cast(Tree, tree.get("breaker", {})), source, checker)
    limits = (
        (("timeouts", "first_byte"), timeouts.first_byte),
        (("timeouts", "connect"), timeouts.connect),
        (("retry", "retry_after", "max_wait"), retry.retry_after.max_wait),
    )
    for where, value in limits:
        if value is not None and value > deadline and _has(tree, where):
            checker.at(
                source,
                where,
                f"{where[-1]} ({format_duration(value)}) is longer than the deadline "
                f"({format_duration(deadline)}); it could never fire",
            )
    # Built-in defaults longer than a short deadline are clamped to it, not errors.
    if timeouts.first_byte > deadline:
        timeouts = replace(timeouts, first_byte=deadline)
    if retry.retry_after.max_wait > deadline:
        retry = replace(retry, retry_after=replace(retry.retry_after, max_wait=deadline))
    if retry.backoff.base > retry.backoff.max:
        checker.at(
            source,
            ("retry", "backoff", "base"),
            f"backoff base ({format_duration(retry.backoff.base)}) is larger than max "
            f"({format_duration(retry.backoff.max)})",
        )
    targets: list[Target] = []
    tiers: list[Tier] = []
    raw_targets = cast(list[Tree], tree.get("fallback", []))
    if not raw_targets:
        checker.at(source, (), "no fallback targets: set fallback here or in defaults")
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
    if targets and all(target.when != "always" for target in targets):
        checker.at(
            source,
            ("fallback",),
            "every target is 'when: context_length_exceeded'; at least one must be a regular one",
        )
    hedge = _hedge(cast(Tree | None, tree.get("hedge")), deadline, targets, source, checker)
    if len(checker.issues) != before:
        return None
    validate = cast(Tree, tree.get("validate", {}))
    translate = cast(Tree, tree.get("translate", {}))
    continuation = cast(Tree, tree.get("continuation", {}))
    access = cast(Tree, tree.get("access", {}))
    shedding = cast(Tree, tree.get("limits", {}))
    return Route(
        name=cast(str, tree["name"]),
        match=_match(cast(Tree, tree["match"])),
        fallback=tuple(targets),
        validate=Validation(
            max_body=parse_size(cast(str | int, validate.get("max_body", "1MiB"))),
            max_prompt_tokens=cast(int | None, validate.get("max_prompt_tokens")),
        ),
        deadline=deadline,
        timeouts=timeouts,
        retry=retry,
        breaker=breaker,
        translate=Translate(
            max_tokens=cast(int, translate.get("max_tokens", 4096)),
            unsupported=cast(Literal["error", "skip"], translate.get("unsupported", "error")),
        ),
        continuation=Continuation(
            enabled=cast(bool, continuation.get("enabled", False)),
            target=cast(Literal["next", "same"], continuation.get("target", "next")),
        ),
        access=Access(
            keys=_access_keys(access, source, checker, inputs),
            localhost_only=cast(bool, access.get("localhost_only", False)),
        ),
        rate_limit=_rate_limit(cast(Tree | None, tree.get("rate_limit"))),
        cache=_cache(cast(Tree | None, tree.get("cache"))),
        tiers=tuple(tiers),
        hedge=hedge,
        limits=Limits(max_in_flight=cast(int, shedding.get("max_in_flight", 1000))),
    )


def _target(
    raw: Tree,
    where: Path,
    upstreams: Mapping[str, Upstream],
    source: _RouteSource,
    checker: _Checker,
) -> Target | None:
    """One target (a fallback step or a tier's deployment); None after reporting an issue."""
    name = cast(str, raw["upstream"])
    upstream = upstreams.get(name)
    if upstream is None:
        known = sorted(upstreams)
        close = difflib.get_close_matches(name, known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        checker.at(
            source,
            (*where, "upstream"),
            f"unknown upstream {name!r}{hint}; defined: {', '.join(known) or 'none'}",
        )
        return None
    if "model" in raw and "model_map" in raw:
        checker.at(source, where, "set either model or model_map, not both")
    model_map = cast(Tree, raw.get("model_map", {}))
    return Target(
        upstream,
        cast(str | None, raw.get("model")),
        tuple((pattern, cast(str, model)) for pattern, model in model_map.items()),
        cast(TargetWhen, raw.get("when", "always")),
        float(cast(float, raw.get("weight", 1.0))),
    )


def _tier(
    route: str,
    raw: Tree,
    position: int,
    upstreams: Mapping[str, Upstream],
    source: _RouteSource,
    checker: _Checker,
) -> Tier | None:
    where: Path = ("fallback", position)
    for key in ("when", "model", "model_map"):
        if key in raw:
            message = (
                "a tier is a regular step: 'when' is not allowed on it"
                if key == "when"
                else f"set {key} on the tier's deployments, not on the tier"
            )
            checker.at(source, (*where, key), message)
    spec = cast(Tree, raw["tier"])
    strategy = cast(BalanceStrategy, spec.get("strategy", "weighted"))
    targets: list[Target] = []
    seen: set[str] = set()
    for index, entry in enumerate(cast(list[Tree], spec["targets"])):
        at: Path = (*where, "tier", "targets", index)
        name = cast(str, entry["upstream"])
        if name in seen:
            checker.at(source, (*at, "upstream"), f"upstream {name!r} is already in this tier")
            continue
        seen.add(name)
        if "weight" in entry and strategy != "weighted":
            checker.at(
                source,
                (*at, "weight"),
                f"weight only applies to strategy 'weighted' (this tier is {strategy!r})",
            )
        target = _target(entry, at, upstreams, source, checker)
        if target is not None:
            targets.append(target)
    if len(targets) != len(cast(list[Tree], spec["targets"])):
        return None
    name = f"{route}:" + "+".join(target.upstream.name for target in targets)
    return Tier(name, tuple(targets), strategy)


def _hedge(
    spec: Tree | None,
    deadline: float,
    targets: list[Target],
    source: _RouteSource,
    checker: _Checker,
) -> Hedge | None:
    if spec is None:
        return None
    after = parse_duration(cast(str, spec["after"]))
    if after >= deadline:
        checker.at(
            source,
            ("hedge", "after"),
            f"after ({format_duration(after)}) is not shorter than the deadline "
            f"({format_duration(deadline)}); a hedge could never be sent",
        )
    if targets and sum(1 for target in targets if target.when == "always") < 2:
        checker.at(source, ("hedge",), "a hedge needs a second target to go to; there is one")
    return Hedge(after)


def _access_keys(
    access: Tree, source: _RouteSource, checker: _Checker, inputs: Mapping[str, InputFile]
) -> tuple[Secret, ...]:
    keys = [Secret(key) for key in cast(list[str], access.get("keys", []))]
    path = access.get("keys_file")
    if isinstance(path, str):
        keys_file = inputs[path]  # read (and hashed) by the loader: see input_paths
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
        keys.extend(Secret(key) for key in found)
    return tuple(keys)


def _upstream(name: str, spec: Tree) -> Upstream:
    auth = cast(Tree | None, spec.get("auth"))
    pool = cast(Tree, spec.get("pool", {}))
    capabilities = cast(Tree, spec.get("capabilities", {}))
    return Upstream(
        name=name,
        url=cast(str, spec["url"]).rstrip("/"),
        format=cast(WireFormat, spec["format"]),
        auth=Auth(cast(str, auth["header"]), Secret(cast(str, auth["value"]))) if auth else None,
        connect_timeout=_seconds(spec, "connect_timeout", 2.0),
        max_connections=cast(int, pool.get("max_connections", 256)),
        prefill=cast(bool, capabilities.get("prefill", False)),
        tools=cast(bool, capabilities.get("tools", True)),
        rate_limit=_rate_limit(cast(Tree | None, spec.get("rate_limit"))),
        client_auth=cast(ClientAuth, spec.get("client_auth", "drop")),
    )


def _match(spec: Tree) -> Match:
    methods = cast(list[str] | None, spec.get("methods"))
    header = cast(Tree | None, spec.get("header"))
    prefix = "prefix" in spec
    return Match(
        path=cast(str, spec["prefix" if prefix else "path"]),
        prefix=prefix,
        methods=frozenset(methods) if methods else None,
        model=cast(str | None, spec.get("model")),
        header=(cast(str, header["name"]).lower(), cast(str, header["value"])) if header else None,
    )


def _timeouts(spec: Tree) -> Timeouts:
    connect = spec.get("connect")
    return Timeouts(
        connect=parse_duration(cast(str, connect)) if connect is not None else None,
        first_byte=_seconds(spec, "first_byte", 30.0),
        idle=_seconds(spec, "idle", 30.0),
    )


def _retry(spec: Tree) -> Retry:
    backoff = cast(Tree, spec.get("backoff", {}))
    after = cast(Tree, spec.get("retry_after", {}))
    budget = cast(Tree, spec.get("budget", {}))
    defaults = Retry()
    on = spec.get("on")
    return Retry(
        attempts=cast(int, spec.get("attempts", defaults.attempts)),
        on=frozenset(cast(list[RetryCondition], on)) if on is not None else defaults.on,
        backoff=Backoff(
            base=_seconds(backoff, "base", 0.25),
            max=_seconds(backoff, "max", 4.0),
            multiplier=float(cast(float, backoff.get("multiplier", 2.0))),
            jitter=cast(Jitter, backoff.get("jitter", "full")),
        ),
        retry_after=RetryAfter(
            honor=cast(bool, after.get("honor", True)),
            max_wait=_seconds(after, "max_wait", 5.0),
        ),
        budget=Budget(
            ratio=parse_ratio(cast(str | float, budget.get("ratio", 0.2))),
            min_per_second=float(cast(float, budget.get("min_per_second", 5.0))),
        ),
    )


def _breaker(spec: Tree, source: _RouteSource, checker: _Checker) -> Breaker:
    window_spec = cast(Tree | None, spec.get("window"))
    window = None
    if window_spec is not None:
        window = Window(
            size=parse_duration(cast(str, window_spec["size"])),
            min_calls=cast(int, window_spec["min_calls"]),
            failure_rate=parse_ratio(cast(str | float, window_spec["failure_rate"])),
        )
        if "consecutive_failures" in spec:
            checker.at(
                source,
                ("breaker", "window"),
                "set either consecutive_failures or window, not both",
            )
        if window.failure_rate <= 0:
            checker.at(source, ("breaker", "window", "failure_rate"), "failure_rate must be > 0%")
        if window.min_calls < 2:
            checker.at(
                source,
                ("breaker", "window", "min_calls"),
                "min_calls below 2 would open the breaker on a single failure; "
                "use consecutive_failures: 1 for that",
            )
    half_open = cast(Tree, spec.get("half_open", {}))
    return Breaker(
        enabled=cast(bool, spec.get("enabled", True)),
        consecutive_failures=None
        if window is not None
        else cast(int, spec.get("consecutive_failures", 5)),
        window=window,
        open_for=_seconds(spec, "open_for", 30.0),
        half_open_probes=cast(int, half_open.get("probes", 1)),
        key=cast(BreakerKey, spec.get("key", "upstream")),
    )


def _seconds(spec: Tree, key: str, default: float) -> float:
    value = spec.get(key)
    return parse_duration(cast(str, value)) if value is not None else default


def _inherited(defaults: Tree, route: Tree) -> Tree:
    """*defaults* minus the breaker trigger a route replaces by choosing the other one."""
    breaker, own = defaults.get("breaker"), route.get("breaker")
    if not isinstance(breaker, dict) or not isinstance(own, dict):
        return defaults
    kept = dict(cast(Tree, breaker))
    for chosen, other in (("window", "consecutive_failures"), ("consecutive_failures", "window")):
        if chosen in own and other not in own:
            kept.pop(other, None)
    return {**defaults, "breaker": kept}


def _merge(base: Tree, override: Tree) -> Tree:
    """Deep merge: mappings merge key by key, anything else in *override* replaces."""
    merged = dict(base)
    for key, value in override.items():
        current = merged.get(key)
        if isinstance(current, dict) and isinstance(value, dict):
            merged[key] = _merge(cast(Tree, current), cast(Tree, value))
        else:
            merged[key] = value
    return merged


def _has(tree: Tree, path: Path) -> bool:
    node: object = tree
    for part in path:
        if isinstance(node, dict):
            if part not in node:
                return False
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
        else:
            return False
    return True
